//! Cache entries in SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::pattern::prefix_upper_bound;
use super::*;
use crate::error::StoreError;
use crate::sqlite::SqliteDb;

pub struct SqliteCacheStore {
    db: SqliteDb,
}

impl SqliteCacheStore {
    pub fn new(db: SqliteDb) -> Self {
        SqliteCacheStore { db }
    }
}

static UPSERT_SQLITE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| crate::sql::sqlite_placeholders(UPSERT_ENTRY));

const COLUMNS: &str = "cache_key, simulation_id, simulation_name, simulation_version, execution_id, \
    squid_id, input_hash, run_db_path, metadata, user_id, created_at_ms, expires_at_ms, \
    last_accessed_ms, access_count, hit_count, size_bytes, status";

fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<CacheEntry> {
    let metadata: Option<String> = r.get(8)?;
    let status: String = r.get(16)?;
    Ok(CacheEntry {
        cache_key: r.get(0)?,
        simulation_id: r.get(1)?,
        simulation_name: r.get(2)?,
        simulation_version: r.get(3)?,
        execution_id: r.get(4)?,
        squid_id: r.get(5)?,
        input_hash: r.get(6)?,
        run_db_path: r.get(7)?,
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        user_id: r.get(9)?,
        created_at_ms: r.get(10)?,
        expires_at_ms: r.get(11)?,
        last_accessed_ms: r.get(12)?,
        access_count: r.get(13)?,
        hit_count: r.get(14)?,
        size_bytes: r.get(15)?,
        status: EntryStatus::parse(&status).unwrap_or(EntryStatus::Invalidated),
    })
}

/// Keys of valid entries matching the filter, narrowed by the pattern's prefix
/// in SQL and matched exactly here.
fn matching_keys(
    c: &Connection,
    f: &InvalidationFilter,
    pattern: Option<&KeyPattern>,
) -> crate::error::Result<Vec<String>> {
    let prefix = pattern
        .map(|p| p.literal_prefix().to_string())
        .unwrap_or_default();
    let upper = prefix_upper_bound(&prefix);
    let mut stmt = c.prepare_cached(
        "SELECT cache_key FROM cache_entries WHERE status = 'valid'
           AND (?1 IS NULL OR simulation_id = ?1)
           AND (?2 IS NULL OR simulation_name = ?2)
           AND (?3 IS NULL OR simulation_version = ?3)
           AND cache_key >= ?4 AND (?5 IS NULL OR cache_key < ?5)",
    )?;
    let rows = stmt.query_map(
        params![
            f.simulation_id,
            f.simulation_name,
            f.simulation_version,
            prefix,
            upper
        ],
        |r| r.get::<_, String>(0),
    )?;
    let mut keys = Vec::new();
    for k in rows {
        let k = k?;
        if pattern.is_none_or(|p| p.matches(&k)) {
            keys.push(k);
        }
    }
    Ok(keys)
}

#[async_trait]
impl CacheStore for SqliteCacheStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, key: &str, now_ms: i64) -> Result<Option<CacheEntry>> {
        let key = key.to_string();
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT {COLUMNS} FROM cache_entries WHERE cache_key = ?1 AND status = 'valid'
                       AND (expires_at_ms IS NULL OR expires_at_ms > ?2)"
                );
                Ok(c.prepare_cached(&sql)?
                    .query_row(params![key, now_ms], entry_from_row)
                    .optional()?)
            })
            .await
    }

    async fn put(&self, e: CacheEntry) -> Result<()> {
        self.db
            .write(move |c| {
                let metadata = e.metadata.as_ref().map(|m| m.to_string());
                c.prepare_cached(&UPSERT_SQLITE)?.execute(params![
                    e.cache_key,
                    e.simulation_id,
                    e.simulation_name,
                    e.simulation_version,
                    e.execution_id,
                    e.squid_id,
                    e.input_hash,
                    e.run_db_path,
                    metadata,
                    e.user_id,
                    e.created_at_ms,
                    e.expires_at_ms,
                    e.last_accessed_ms,
                    e.size_bytes,
                ])?;
                Ok(())
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let key = key.to_string();
        self.db
            .write(move |c| {
                Ok(
                    c.prepare_cached("DELETE FROM cache_entries WHERE cache_key = ?1")?
                        .execute([key])?
                        > 0,
                )
            })
            .await
    }

    async fn delete_all(&self) -> Result<u64> {
        self.db
            .write(|c| Ok(c.execute("DELETE FROM cache_entries", [])? as u64))
            .await
    }

    async fn invalidate(
        &self,
        filter: &InvalidationFilter,
        pattern: Option<&KeyPattern>,
        record: &InvalidationRecord,
    ) -> Result<u64> {
        let (filter, pattern, record) = (filter.clone(), pattern.cloned(), record.clone());
        self.db
            .write(move |c| {
                let keys = matching_keys(c, &filter, pattern.as_ref())?;
                let reason = record
                    .reason
                    .clone()
                    .unwrap_or_else(|| "manual invalidation".into());
                let mut upd = c.prepare_cached(
                    "UPDATE cache_entries SET status = 'invalidated', invalidation_reason = ?2
                     WHERE cache_key = ?1",
                )?;
                for k in &keys {
                    upd.execute(params![k, reason])?;
                }
                c.prepare_cached(
                    "INSERT INTO cache_invalidations (simulation_id, simulation_name,
                        simulation_version, invalidation_type, invalidation_pattern,
                        invalidated_count, requested_by, requested_at_ms, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    filter.simulation_id,
                    filter.simulation_name,
                    filter.simulation_version,
                    filter.kind(),
                    filter.pattern,
                    keys.len() as i64,
                    record.requested_by,
                    crate::clock::now_ms(),
                    record.reason,
                ])?;
                Ok(keys.len() as u64)
            })
            .await
    }

    async fn stats(&self, simulation_id: Option<i64>, now_ms: i64) -> Result<StoreStats> {
        self.db
            .read(move |c| {
                let mut s = c
                    .prepare_cached(
                        "SELECT COUNT(*), COALESCE(SUM(hit_count), 0), COALESCE(SUM(access_count), 0),
                                COALESCE(SUM(size_bytes), 0)
                         FROM cache_entries WHERE status = 'valid'
                           AND (expires_at_ms IS NULL OR expires_at_ms > ?1)
                           AND (?2 IS NULL OR simulation_id = ?2)",
                    )?
                    .query_row(params![now_ms, simulation_id], |r| {
                        Ok(StoreStats {
                            total_entries: r.get(0)?,
                            total_hits: r.get(1)?,
                            total_accesses: r.get(2)?,
                            total_size_bytes: r.get(3)?,
                            ..StoreStats::default()
                        })
                    })?;
                s.invalidation_count = c
                    .prepare_cached(
                        "SELECT COUNT(*) FROM cache_invalidations
                         WHERE (?1 IS NULL OR simulation_id = ?1)",
                    )?
                    .query_row([simulation_id], |r| r.get(0))?;
                if simulation_id.is_none() {
                    let mut st = c.prepare_cached("SELECT name, value FROM cache_counters")?;
                    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
                    for row in rows {
                        match row? {
                            (n, v) if n == "misses" => s.total_misses = v,
                            (n, v) if n == "evictions" => s.evictions = v,
                            _ => {}
                        }
                    }
                }
                Ok(s)
            })
            .await
    }

    async fn list(&self, q: &ListQuery) -> Result<(Vec<CacheEntry>, i64)> {
        let q = q.clone();
        self.db
            .read(move |c| {
                let status = q.status.map(EntryStatus::as_str);
                let filter =
                    "(?1 IS NULL OR simulation_id = ?1) AND (?2 IS NULL OR simulation_name = ?2)
                              AND (?3 IS NULL OR status = ?3)";
                let total: i64 = c
                    .prepare_cached(&format!(
                        "SELECT COUNT(*) FROM cache_entries WHERE {filter}"
                    ))?
                    .query_row(params![q.simulation_id, q.simulation_name, status], |r| {
                        r.get(0)
                    })?;
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM cache_entries WHERE {filter}
                     ORDER BY created_at_ms DESC, cache_key LIMIT ?4 OFFSET ?5"
                ))?;
                let rows = stmt.query_map(
                    params![
                        q.simulation_id,
                        q.simulation_name,
                        status,
                        q.limit,
                        q.offset
                    ],
                    entry_from_row,
                )?;
                let entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((entries, total))
            })
            .await
    }

    async fn record_accesses(&self, hits: &[HitDelta], misses: i64) -> Result<()> {
        let hits = hits.to_vec();
        self.db
            .write(move |c| {
                let mut upd = c.prepare_cached(
                    "UPDATE cache_entries SET hit_count = hit_count + ?2,
                        access_count = access_count + ?2,
                        last_accessed_ms = MAX(last_accessed_ms, ?3)
                     WHERE cache_key = ?1",
                )?;
                for h in &hits {
                    upd.execute(params![h.cache_key, h.hits, h.last_accessed_ms])?;
                }
                if misses > 0 {
                    c.prepare_cached(
                        "UPDATE cache_counters SET value = value + ?1 WHERE name = 'misses'",
                    )?
                    .execute([misses])?;
                }
                Ok(())
            })
            .await
    }

    async fn sweep_expired(&self, now_ms: i64) -> Result<u64> {
        self.db
            .write(move |c| {
                let n = c.execute(
                    "DELETE FROM cache_entries WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
                    [now_ms],
                )? as i64;
                if n > 0 {
                    c.execute("UPDATE cache_counters SET value = value + ?1 WHERE name = 'evictions'", [n])?;
                }
                Ok(n as u64)
            })
            .await
    }

    async fn ping(&self) -> Result<()> {
        self.db
            .read(|c| {
                c.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(|e| StoreError::Unavailable(Box::new(e)))
            })
            .await
    }
}

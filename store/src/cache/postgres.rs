//! Cache entries in PostgreSQL. Every write also publishes a [`CacheEvent`] in
//! the same transaction so other processes' memory tiers stay coherent.

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::*;
use crate::error::StoreError;
use crate::events::{CHANNEL, CacheEvent, Envelope};
use crate::postgres::PgDb;

pub struct PgCacheStore {
    db: PgDb,
    origin: String,
    reads: tokio::sync::mpsc::Sender<ReadRequest>,
    writes: tokio::sync::mpsc::Sender<WriteRequest>,
}

type Queue<T> = std::sync::Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<T>>>;

/// Waits for one request, then takes whatever else is already queued, up to
/// `max`. `false` when the queue is closed.
async fn next_batch<T>(queue: &Queue<T>, batch: &mut Vec<T>, max: usize) -> bool {
    let mut rx = queue.lock().await;
    match rx.recv().await {
        Some(r) => batch.push(r),
        None => return false,
    }
    while batch.len() < max {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    true
}

/// The same failure for every caller of a batch.
fn shared_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(why) => {
            StoreError::Unavailable(crate::error::chain(why.as_ref()).into())
        }
        other => StoreError::Database(other.to_string().into()),
    }
}

type ReadReply = tokio::sync::oneshot::Sender<Result<Option<CacheEntry>>>;

struct ReadRequest {
    key: String,
    now_ms: i64,
    reply: ReadReply,
}

/// Point reads in flight at once are answered by one `= ANY($1)` query: under
/// load PostgreSQL parses, plans and round-trips once per batch instead of
/// once per GET. Several batchers keep connections busy in parallel.
const READ_BATCHERS: usize = 4;
const MAX_READ_BATCH: usize = 256;

async fn read_batcher(db: PgDb, queue: Queue<ReadRequest>) {
    let mut batch: Vec<ReadRequest> = Vec::with_capacity(MAX_READ_BATCH);
    while next_batch(&queue, &mut batch, MAX_READ_BATCH).await {
        let keys: Vec<&str> = batch.iter().map(|r| r.key.as_str()).collect();
        let now = batch.iter().map(|r| r.now_ms).min().unwrap_or(0);
        let result: Result<Vec<CacheEntry>> = async {
            let c = db.client().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM cache_entries WHERE cache_key = ANY($1) AND status = 'valid'
                       AND (expires_at_ms IS NULL OR expires_at_ms > $2)"
                ))
                .await?;
            Ok(c.query(&stmt, &[&keys, &now]).await?.iter().map(entry_from_row).collect())
        }
        .await;
        match result {
            Ok(rows) => {
                let by_key: std::collections::HashMap<String, CacheEntry> =
                    rows.into_iter().map(|e| (e.cache_key.clone(), e)).collect();
                for r in batch.drain(..) {
                    // Each caller's own clock decides expiry at the edge.
                    let e = by_key.get(&r.key).filter(|e| e.is_live(r.now_ms)).cloned();
                    let _ = r.reply.send(Ok(e));
                }
            }
            Err(e) => {
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(shared_error(&e)));
                }
            }
        }
    }
}

struct WriteRequest {
    entry: CacheEntry,
    reply: tokio::sync::oneshot::Sender<Result<()>>,
}

/// Puts in flight at once are committed in one transaction. With fsync on,
/// PostgreSQL's WAL flush at each commit was the cost of a POST (about 1,800
/// POST/s at 32 connections, one commit each); a batch pays it once.
const WRITE_BATCHERS: usize = 2;
const MAX_WRITE_BATCH: usize = 128;

async fn write_batcher(db: PgDb, origin: String, queue: Queue<WriteRequest>) {
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(MAX_WRITE_BATCH);
    while next_batch(&queue, &mut batch, MAX_WRITE_BATCH).await {
        let mut entries: Vec<&CacheEntry> = batch.iter().map(|r| &r.entry).collect();
        // Row locks taken in key order cannot deadlock with the other
        // batcher; the sort is stable, so the later of two puts of one key
        // still wins.
        entries.sort_by(|a, b| a.cache_key.cmp(&b.cache_key));
        let result = put_all(&db, &origin, &entries).await;
        match result {
            Ok(()) => {
                for r in batch.drain(..) {
                    let _ = r.reply.send(Ok(()));
                }
            }
            Err(e) if retry_alone(&e, batch.len()) => {
                for r in batch.drain(..) {
                    let alone = put_all(&db, &origin, &[&r.entry]).await;
                    let _ = r.reply.send(alone);
                }
            }
            Err(e) => {
                for r in batch.drain(..) {
                    let _ = r.reply.send(Err(shared_error(&e)));
                }
            }
        }
    }
}

/// Whether the puts of a failed batch are tried again one by one. One bad
/// entry must not fail the others, and nothing of the batch was committed.
/// But not when the database is unreachable: that would only make every
/// caller wait out the pool's timeout once more, one after another.
fn retry_alone(e: &StoreError, batch_len: usize) -> bool {
    batch_len > 1 && !matches!(e, StoreError::Unavailable(_))
}

/// Writes `entries` in order and announces each, in one transaction. The
/// statements are pipelined: all are sent before the first reply is read.
async fn put_all(db: &PgDb, origin: &str, entries: &[&CacheEntry]) -> Result<()> {
    let mut c = db.client().await?;
    let tx = c.transaction().await?;
    let upsert = tx.prepare_cached(UPSERT_ENTRY).await?;
    let notify = tx.prepare_cached(NOTIFY).await?;
    let payloads: Vec<String> = entries
        .iter()
        .map(|e| {
            envelope(
                origin,
                CacheEvent::Put {
                    key: e.cache_key.clone(),
                },
            )
        })
        .collect();
    let (t, upsert, notify) = (&tx, &upsert, &notify);
    let upserts = entries.iter().map(|e| async move {
        let params: [&(dyn ToSql + Sync); 14] = [
            &e.cache_key,
            &e.simulation_id,
            &e.simulation_name,
            &e.simulation_version,
            &e.execution_id,
            &e.squid_id,
            &e.input_hash,
            &e.run_db_path,
            &e.metadata,
            &e.user_id,
            &e.created_at_ms,
            &e.expires_at_ms,
            &e.last_accessed_ms,
            &e.size_bytes,
        ];
        t.execute(upsert, &params).await
    });
    futures_util::future::try_join_all(upserts).await?;
    let notifies = payloads
        .iter()
        .map(|p| async move { t.execute(notify, &[&CHANNEL, p]).await });
    futures_util::future::try_join_all(notifies).await?;
    tx.commit().await?;
    Ok(())
}

fn envelope(origin: &str, event: CacheEvent) -> String {
    serde_json::to_string(&Envelope {
        origin: origin.to_string(),
        event,
    })
    .unwrap_or_default()
}

impl PgCacheStore {
    /// `origin` names this process in the events it publishes. Starts the read
    /// batchers, so it must be called inside a Tokio runtime.
    pub fn new(db: PgDb, origin: impl Into<String>) -> Self {
        let origin = origin.into();
        let (reads, rx) = tokio::sync::mpsc::channel(4096);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..READ_BATCHERS {
            tokio::spawn(read_batcher(db.clone(), rx.clone()));
        }
        let (writes, rx) = tokio::sync::mpsc::channel(4096);
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..WRITE_BATCHERS {
            tokio::spawn(write_batcher(db.clone(), origin.clone(), rx.clone()));
        }
        PgCacheStore {
            db,
            origin,
            reads,
            writes,
        }
    }

    fn envelope(&self, event: CacheEvent) -> String {
        envelope(&self.origin, event)
    }
}

const COLUMNS: &str = "cache_key, simulation_id, simulation_name, simulation_version, execution_id, \
    squid_id, input_hash, run_db_path, metadata, user_id, created_at_ms, expires_at_ms, \
    last_accessed_ms, access_count, hit_count, size_bytes, status";

fn entry_from_row(r: &Row) -> CacheEntry {
    let status: String = r.get(16);
    CacheEntry {
        cache_key: r.get(0),
        simulation_id: r.get(1),
        simulation_name: r.get(2),
        simulation_version: r.get(3),
        execution_id: r.get(4),
        squid_id: r.get(5),
        input_hash: r.get(6),
        run_db_path: r.get(7),
        metadata: r.get(8),
        user_id: r.get(9),
        created_at_ms: r.get(10),
        expires_at_ms: r.get(11),
        last_accessed_ms: r.get(12),
        access_count: r.get(13),
        hit_count: r.get(14),
        size_bytes: r.get(15),
        status: EntryStatus::parse(&status).unwrap_or(EntryStatus::Invalidated),
    }
}

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

#[async_trait]
impl CacheStore for PgCacheStore {
    fn backend(&self) -> &'static str {
        "postgresql"
    }

    async fn get(&self, key: &str, now_ms: i64) -> Result<Option<CacheEntry>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let closed = || StoreError::Unavailable("read batcher stopped".into());
        self.reads
            .send(ReadRequest {
                key: key.to_string(),
                now_ms,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn put(&self, e: CacheEntry) -> Result<()> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let closed = || StoreError::Unavailable("write batcher stopped".into());
        self.writes
            .send(WriteRequest { entry: e, reply })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut c = self.db.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute("DELETE FROM cache_entries WHERE cache_key = $1", &[&key])
            .await?;
        if n > 0 {
            let payload = self.envelope(CacheEvent::Delete {
                key: key.to_string(),
            });
            tx.execute(NOTIFY, &[&CHANNEL, &payload]).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn delete_all(&self) -> Result<u64> {
        let mut c = self.db.client().await?;
        let tx = c.transaction().await?;
        let n = tx.execute("DELETE FROM cache_entries", &[]).await?;
        tx.execute(NOTIFY, &[&CHANNEL, &self.envelope(CacheEvent::Clear)])
            .await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn invalidate(
        &self,
        f: &InvalidationFilter,
        pattern: Option<&KeyPattern>,
        record: &InvalidationRecord,
    ) -> Result<u64> {
        let mut c = self.db.client().await?;
        let tx = c.transaction().await?;
        let prefix = pattern.map(|p| p.literal_prefix()).unwrap_or("");
        // starts_with is collation-independent, unlike a >= / < range on text.
        let rows = tx
            .query(
                "SELECT cache_key FROM cache_entries WHERE status = 'valid'
                   AND ($1::BIGINT IS NULL OR simulation_id = $1)
                   AND ($2::TEXT IS NULL OR simulation_name = $2)
                   AND ($3::TEXT IS NULL OR simulation_version = $3)
                   AND starts_with(cache_key, $4)
                 FOR UPDATE",
                &[
                    &f.simulation_id,
                    &f.simulation_name,
                    &f.simulation_version,
                    &prefix,
                ],
            )
            .await?;
        let keys: Vec<String> = rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|k| pattern.is_none_or(|p| p.matches(k)))
            .collect();
        let reason = record
            .reason
            .clone()
            .unwrap_or_else(|| "manual invalidation".into());
        tx.execute(
            "UPDATE cache_entries SET status = 'invalidated', invalidation_reason = $2
             WHERE cache_key = ANY($1)",
            &[&keys, &reason],
        )
        .await?;
        let count = keys.len() as i64;
        tx.execute(
            "INSERT INTO cache_invalidations (simulation_id, simulation_name, simulation_version,
                invalidation_type, invalidation_pattern, invalidated_count, requested_by,
                requested_at_ms, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &f.simulation_id,
                &f.simulation_name,
                &f.simulation_version,
                &f.kind(),
                &f.pattern,
                &count,
                &record.requested_by,
                &crate::clock::now_ms(),
                &record.reason,
            ],
        )
        .await?;
        if count > 0 {
            let payload = self.envelope(CacheEvent::Invalidate { filter: f.clone() });
            tx.execute(NOTIFY, &[&CHANNEL, &payload]).await?;
        }
        tx.commit().await?;
        Ok(count as u64)
    }

    async fn stats(&self, simulation_id: Option<i64>, now_ms: i64) -> Result<StoreStats> {
        let c = self.db.client().await?;
        let r = c
            .query_one(
                "SELECT COUNT(*)::BIGINT, COALESCE(SUM(hit_count), 0)::BIGINT,
                        COALESCE(SUM(access_count), 0)::BIGINT, COALESCE(SUM(size_bytes), 0)::BIGINT
                 FROM cache_entries WHERE status = 'valid'
                   AND (expires_at_ms IS NULL OR expires_at_ms > $1)
                   AND ($2::BIGINT IS NULL OR simulation_id = $2)",
                &[&now_ms, &simulation_id],
            )
            .await?;
        let mut s = StoreStats {
            total_entries: r.get(0),
            total_hits: r.get(1),
            total_accesses: r.get(2),
            total_size_bytes: r.get(3),
            ..StoreStats::default()
        };
        s.invalidation_count = c
            .query_one(
                "SELECT COUNT(*)::BIGINT FROM cache_invalidations
                 WHERE ($1::BIGINT IS NULL OR simulation_id = $1)",
                &[&simulation_id],
            )
            .await?
            .get(0);
        if simulation_id.is_none() {
            for row in c
                .query("SELECT name, value FROM cache_counters", &[])
                .await?
            {
                match row.get::<_, &str>(0) {
                    "misses" => s.total_misses = row.get(1),
                    "evictions" => s.evictions = row.get(1),
                    _ => {}
                }
            }
        }
        Ok(s)
    }

    async fn list(&self, q: &ListQuery) -> Result<(Vec<CacheEntry>, i64)> {
        let c = self.db.client().await?;
        let status = q.status.map(EntryStatus::as_str);
        let filter = "($1::BIGINT IS NULL OR simulation_id = $1) AND ($2::TEXT IS NULL OR simulation_name = $2)
                      AND ($3::TEXT IS NULL OR status = $3)";
        let total: i64 = c
            .query_one(
                &format!("SELECT COUNT(*)::BIGINT FROM cache_entries WHERE {filter}"),
                &[&q.simulation_id, &q.simulation_name, &status],
            )
            .await?
            .get(0);
        let rows = c
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM cache_entries WHERE {filter}
                     ORDER BY created_at_ms DESC, cache_key LIMIT $4 OFFSET $5"
                ),
                &[
                    &q.simulation_id,
                    &q.simulation_name,
                    &status,
                    &q.limit,
                    &q.offset,
                ],
            )
            .await?;
        Ok((rows.iter().map(entry_from_row).collect(), total))
    }

    async fn record_accesses(&self, hits: &[HitDelta], misses: i64) -> Result<()> {
        let c = self.db.client().await?;
        if !hits.is_empty() {
            let keys: Vec<&str> = hits.iter().map(|h| h.cache_key.as_str()).collect();
            let counts: Vec<i64> = hits.iter().map(|h| h.hits).collect();
            let times: Vec<i64> = hits.iter().map(|h| h.last_accessed_ms).collect();
            c.execute(
                "UPDATE cache_entries AS c SET hit_count = c.hit_count + d.hits,
                    access_count = c.access_count + d.hits,
                    last_accessed_ms = GREATEST(c.last_accessed_ms, d.ts)
                 FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) AS d(key, hits, ts)
                 WHERE c.cache_key = d.key",
                &[&keys, &counts, &times],
            )
            .await?;
        }
        if misses > 0 {
            c.execute(
                "UPDATE cache_counters SET value = value + $1 WHERE name = 'misses'",
                &[&misses],
            )
            .await?;
        }
        Ok(())
    }

    async fn sweep_expired(&self, now_ms: i64) -> Result<u64> {
        let mut c = self.db.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM cache_entries WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= $1",
                &[&now_ms],
            )
            .await?;
        if n > 0 {
            tx.execute(
                "UPDATE cache_counters SET value = value + $1 WHERE name = 'evictions'",
                &[&(n as i64)],
            )
            .await?;
        }
        tx.commit().await?;
        // Expired entries are already misses everywhere (each tier checks expiry
        // on read), so no event is needed.
        Ok(n)
    }

    async fn ping(&self) -> Result<()> {
        let c = self.db.client().await?;
        c.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_is_retried_alone_only_for_what_the_database_refused() {
        let refused = || StoreError::Database("22021: invalid byte sequence".into());
        let gone = || StoreError::Unavailable("pool timed out".into());
        assert!(retry_alone(&refused(), 2));
        assert!(!retry_alone(&refused(), 1), "a batch of one has its answer");
        assert!(!retry_alone(&gone(), 64));
    }
}

//! The operator's ledger of runs in flight, shared by every replica:
//!
//! - a **lease per cache key**, so that identical runs start one pod: the
//!   holder (a SimulationRun, by uid) heartbeats it while its pod runs, and a
//!   lease whose holder stopped heartbeating is taken over once it expires;
//! - an **expected ingest per execution**: the hash of the token the pod was
//!   given, and — once its sidecar uploaded the run database — what the
//!   ingest found (status, outputs, last log lines). An execution is ingested
//!   at most once.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::lease;
use crate::sql::{DbRow, Sql, Stmt};

/// Who holds a cache key's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// `namespace/name` of the SimulationRun.
    pub holder: String,
    pub holder_uid: String,
    pub execution_id: String,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller holds the lease (newly, renewed, or taken over).
    Acquired,
    /// Someone else holds a live lease.
    HeldBy(LeaseHolder),
}

/// What an ingest recorded about a run database.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestRecord {
    pub execution_id: String,
    pub run_uid: String,
    pub ingested_at_ms: Option<i64>,
    pub run_db_path: Option<String>,
    pub size_bytes: Option<i64>,
    /// `completed` or `failed`, as the run database says.
    pub run_status: Option<String>,
    pub result_id: Option<i64>,
    pub outputs: Value,
    pub duration_seconds: Option<f64>,
    pub error_message: Option<String>,
    pub last_logs: Vec<String>,
}

/// What the ingest route found in an uploaded run database.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestFindings {
    pub run_db_path: String,
    pub size_bytes: i64,
    pub run_status: String,
    pub result_id: Option<i64>,
    pub outputs: Value,
    pub duration_seconds: Option<f64>,
    pub error_message: Option<String>,
    pub last_logs: Vec<String>,
}

/// SHA-256 (hex) of a token: only hashes are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(Clone)]
pub struct RunLedger {
    sql: Sql,
}

impl RunLedger {
    pub fn new(sql: Sql) -> Self {
        RunLedger { sql }
    }

    /// Takes the lease on `key` for `holder_uid` unless another holder's lease
    /// is still live. The same holder asking again renews it.
    pub async fn acquire(
        &self,
        key: &str,
        holder: &str,
        holder_uid: &str,
        execution_id: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<LeaseOutcome> {
        let take = lease::RUN_CACHE_KEY.take(
            vec![key.into()],
            holder_uid,
            vec![
                ("holder", holder.into()),
                ("execution_id", execution_id.into()),
            ],
            ttl_ms,
            now_ms,
        );
        let done = self.sql.script(vec![take]).await?;
        if !done[0].is_empty() {
            return Ok(LeaseOutcome::Acquired);
        }
        match self.holder(key).await? {
            Some(h) => Ok(LeaseOutcome::HeldBy(h)),
            // Released between the two statements: try once more next time.
            None => Ok(LeaseOutcome::HeldBy(LeaseHolder {
                holder: String::new(),
                holder_uid: String::new(),
                execution_id: String::new(),
                expires_at_ms: now_ms,
            })),
        }
    }

    pub async fn holder(&self, key: &str) -> Result<Option<LeaseHolder>> {
        let rows = self
            .sql
            .query(
                "SELECT holder, holder_uid, execution_id, expires_at_ms FROM cache_leases WHERE cache_key = $1",
                vec![key.into()],
            )
            .await?;
        Ok(rows.first().map(|r| LeaseHolder {
            holder: r.text(0).unwrap_or_default(),
            holder_uid: r.text(1).unwrap_or_default(),
            execution_id: r.text(2).unwrap_or_default(),
            expires_at_ms: r.i64(3).unwrap_or_default(),
        }))
    }

    /// Extends the holder's lease; false when it no longer holds it.
    pub async fn heartbeat(
        &self,
        key: &str,
        holder_uid: &str,
        ttl_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let renew =
            lease::RUN_CACHE_KEY.renew(vec![key.into()], holder_uid, vec![], ttl_ms, now_ms);
        let done = self.sql.script(vec![renew]).await?;
        Ok(!done[0].is_empty())
    }

    /// Gives the lease up (only the holder can).
    pub async fn release(&self, key: &str, holder_uid: &str) -> Result<bool> {
        let release = lease::RUN_CACHE_KEY.release(vec![key.into()], holder_uid);
        let done = self.sql.script(vec![release]).await?;
        Ok(!done[0].is_empty())
    }

    /// Records that a run database is expected for `execution_id`, from a pod
    /// given `token`. Until the ingest happens, a new token replaces the old.
    pub async fn expect_ingest(
        &self,
        execution_id: &str,
        run_uid: &str,
        token: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.sql
            .script(vec![Stmt::new(
                "INSERT INTO run_ingests (execution_id, run_uid, token_sha256, created_at_ms)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (execution_id) DO UPDATE SET token_sha256 = excluded.token_sha256
                 WHERE run_ingests.ingested_at_ms IS NULL",
                vec![
                    execution_id.into(),
                    run_uid.into(),
                    token_hash(token).into(),
                    now_ms.into(),
                ],
            )])
            .await?;
        Ok(())
    }

    /// True when `token` is the one expected for `execution_id`.
    pub async fn token_matches(&self, execution_id: &str, token: &str) -> Result<bool> {
        let rows = self
            .sql
            .query(
                "SELECT token_sha256 FROM run_ingests WHERE execution_id = $1",
                vec![execution_id.into()],
            )
            .await?;
        let Some(stored) = rows.first().and_then(|r| r.text(0)) else {
            return Ok(false);
        };
        // Both are hex digests of equal length; compare without early exit.
        let given = token_hash(token);
        Ok(stored.len() == given.len()
            && stored
                .bytes()
                .zip(given.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0)
    }

    /// Records an ingest. False (and nothing changes) when the execution was
    /// already ingested: a run is ingested once.
    pub async fn record_ingest(
        &self,
        execution_id: &str,
        f: &IngestFindings,
        now_ms: i64,
    ) -> Result<bool> {
        let done = self
            .sql
            .script(vec![Stmt::new(
                "UPDATE run_ingests SET ingested_at_ms = $2, run_db_path = $3, size_bytes = $4,
                    run_status = $5, result_id = $6, outputs = $7, duration_seconds = $8,
                    error_message = $9, last_logs = $10
                 WHERE execution_id = $1 AND ingested_at_ms IS NULL RETURNING execution_id",
                vec![
                    execution_id.into(),
                    now_ms.into(),
                    f.run_db_path.as_str().into(),
                    f.size_bytes.into(),
                    f.run_status.as_str().into(),
                    f.result_id.into(),
                    f.outputs.to_string().into(),
                    f.duration_seconds.into(),
                    f.error_message.clone().into(),
                    serde_json::to_string(&f.last_logs)?.into(),
                ],
            )])
            .await?;
        Ok(!done[0].is_empty())
    }

    pub async fn ingest(&self, execution_id: &str) -> Result<Option<IngestRecord>> {
        let rows = self
            .sql
            .query(
                "SELECT execution_id, run_uid, ingested_at_ms, run_db_path, size_bytes, run_status,
                    result_id, outputs, duration_seconds, error_message, last_logs
                 FROM run_ingests WHERE execution_id = $1",
                vec![execution_id.into()],
            )
            .await?;
        Ok(rows.first().map(ingest_row))
    }
}

fn ingest_row(r: &DbRow) -> IngestRecord {
    let json = |i: usize| {
        r.text(i)
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .unwrap_or(Value::Null)
    };
    IngestRecord {
        execution_id: r.text(0).unwrap_or_default(),
        run_uid: r.text(1).unwrap_or_default(),
        ingested_at_ms: r.i64(2),
        run_db_path: r.text(3),
        size_bytes: r.i64(4),
        run_status: r.text(5),
        result_id: r.i64(6),
        outputs: json(7),
        duration_seconds: r.f64(8),
        error_message: r.text(9),
        last_logs: serde_json::from_value(json(10)).unwrap_or_default(),
    }
}

//! What a finished run leaves in the shared store, built without I/O: its
//! execution record in the catalog and its cache entry. The controller,
//! local mode and the benchmarks build them here, so they agree.

use serde_json::{Value, json};
use simcache_store::cache::{CacheEntry, EntryStatus};
use simcache_store::catalog::{CacheOutcome, ExecutionRecord, ExecutionStatus};

/// A run's identity as the store names it.
#[derive(Debug, Clone, Copy)]
pub struct RunKey<'a> {
    pub simulation_id: i64,
    pub name: &'a str,
    pub version: &'a str,
    pub hash: &'a str,
    pub cache_key: &'a str,
}

impl RunKey<'_> {
    /// sim2l's readable run id: `name/version/<12 hex of the input hash>`.
    pub fn squid_id(&self) -> String {
        let short = self.hash.get(..12).unwrap_or(self.hash);
        format!("{}/{}/{short}", self.name, self.version)
    }
}

/// One execution as the catalog records it. Built by [`Execution::cache_hit`],
/// [`Execution::completed`] or [`Execution::failed`].
#[derive(Debug, Clone)]
pub struct Execution<'a> {
    pub id: &'a str,
    pub status: ExecutionStatus,
    pub cache_hit: bool,
    pub cache_status: CacheOutcome,
    pub duration: Option<f64>,
    pub node: Option<String>,
    pub run_db_path: Option<String>,
    pub run_db_size_bytes: Option<i64>,
    pub output_count: i64,
}

/// What a run that executed left behind.
#[derive(Debug, Clone, Default)]
pub struct Completed {
    pub duration: Option<f64>,
    pub node: Option<String>,
    pub run_db_path: Option<String>,
    pub run_db_size_bytes: Option<i64>,
    pub output_count: i64,
}

impl<'a> Execution<'a> {
    /// A run answered from the cache entry `entry`, recorded under its own id
    /// (`id`) so the catalog's hit rate counts it.
    pub fn cache_hit(id: &'a str, entry: &CacheEntry) -> Self {
        Execution {
            id,
            status: ExecutionStatus::Cached,
            cache_hit: true,
            cache_status: CacheOutcome::Hit,
            duration: None,
            node: None,
            run_db_path: entry.run_db_path.clone(),
            run_db_size_bytes: Some(entry.size_bytes),
            output_count: 0,
        }
    }

    /// A run that executed to the end (`ok`: it succeeded), with what the
    /// cache did with its result.
    pub fn completed(id: &'a str, ok: bool, cache: CacheOutcome, done: Completed) -> Self {
        Execution {
            id,
            status: if ok {
                ExecutionStatus::Completed
            } else {
                ExecutionStatus::Failed
            },
            cache_hit: false,
            cache_status: cache,
            duration: done.duration,
            node: done.node,
            run_db_path: done.run_db_path,
            run_db_size_bytes: done.run_db_size_bytes,
            output_count: done.output_count,
        }
    }

    /// A run that failed without leaving a run database to describe it.
    pub fn failed(id: &'a str) -> Self {
        Self::completed(id, false, CacheOutcome::Skipped, Completed::default())
    }

    /// The catalog row, completed at `now_ms` by `executor`.
    pub fn record(&self, key: &RunKey, executor: &str, now_ms: i64) -> ExecutionRecord {
        let took = self.duration.map(|d| (d * 1000.0) as i64).unwrap_or(0);
        ExecutionRecord {
            execution_id: self.id.into(),
            squid_id: key.squid_id(),
            simulation_id: key.simulation_id,
            user_id: None,
            started_at_ms: now_ms - took,
            completed_at_ms: Some(now_ms),
            duration_seconds: self.duration,
            status: self.status,
            executor_type: executor.into(),
            cache_hit: self.cache_hit,
            cache_status: Some(self.cache_status),
            node: self.node.clone(),
            run_db_path: self.run_db_path.clone(),
            run_db_size_bytes: self.run_db_size_bytes,
            input_hash: Some(key.hash.into()),
            output_count: self.output_count,
            artifact_count: 0,
            error_count: 0,
            warning_count: 0,
            environment: None,
        }
    }
}

/// The CRD's cache status as the catalog stores it.
pub fn cache_outcome(c: simcache_crds::CacheStatus) -> CacheOutcome {
    use simcache_crds::CacheStatus as S;
    match c {
        S::Hit => CacheOutcome::Hit,
        S::Miss => CacheOutcome::Miss,
        S::Populated => CacheOutcome::Populated,
        S::Skipped => CacheOutcome::Skipped,
        S::LookupFailure => CacheOutcome::LookupFailure,
        S::PutFailure => CacheOutcome::PutFailure,
    }
}

/// The cache entry of a succeeded run: outputs and provenance in its
/// metadata (what a cache hit hands back), expiring after `ttl_seconds`.
#[allow(clippy::too_many_arguments)]
pub fn cache_entry(
    key: &RunKey,
    execution_id: &str,
    run_db_path: Option<String>,
    size_bytes: i64,
    outputs: &Value,
    result_id: Option<i64>,
    produced_by: &str,
    duration: Option<f64>,
    ttl_seconds: Option<i64>,
    now_ms: i64,
) -> CacheEntry {
    CacheEntry {
        cache_key: key.cache_key.into(),
        simulation_id: key.simulation_id,
        simulation_name: key.name.into(),
        simulation_version: key.version.into(),
        execution_id: execution_id.into(),
        squid_id: key.squid_id(),
        input_hash: key.hash.into(),
        run_db_path,
        metadata: Some(json!({
            "outputs": outputs,
            "result_id": result_id,
            "produced_by": produced_by,
            "duration_seconds": duration,
        })),
        user_id: None,
        created_at_ms: now_ms,
        expires_at_ms: ttl_seconds.map(|t| now_ms + t * 1000),
        last_accessed_ms: now_ms,
        access_count: 0,
        hit_count: 0,
        size_bytes,
        status: EntryStatus::Valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_name_the_run_and_entries_expire_with_the_policy() {
        let key = RunKey {
            simulation_id: 7,
            name: "thermal",
            version: "1.0.0",
            hash: "0123456789abcdef",
            cache_key: "thermal/1.0.0/0123456789abcdef",
        };
        assert_eq!(key.squid_id(), "thermal/1.0.0/0123456789ab");
        let e = Execution::completed(
            "x.1",
            true,
            CacheOutcome::Populated,
            Completed {
                duration: Some(2.5),
                ..Default::default()
            },
        );
        let r = e.record(&key, "kubernetes", 10_000);
        assert_eq!((r.started_at_ms, r.completed_at_ms), (7_500, Some(10_000)));
        assert_eq!(r.input_hash.as_deref(), Some("0123456789abcdef"));
        assert_eq!(
            (r.status, r.cache_status, r.cache_hit),
            (
                ExecutionStatus::Completed,
                Some(CacheOutcome::Populated),
                false
            )
        );
        let f = Execution::failed("x.2").record(&key, "local", 10_000);
        assert_eq!(
            (f.status, f.cache_status),
            (ExecutionStatus::Failed, Some(CacheOutcome::Skipped))
        );
        let c = cache_entry(
            &key,
            "x.1",
            None,
            10,
            &json!({"y": 1}),
            Some(3),
            "ns/r",
            Some(2.5),
            Some(60),
            1_000,
        );
        assert_eq!(c.expires_at_ms, Some(61_000));
        assert_eq!(c.metadata.unwrap()["outputs"]["y"], 1);
        let forever = cache_entry(
            &key,
            "x.1",
            None,
            10,
            &json!({}),
            None,
            "ns/r",
            None,
            None,
            1_000,
        );
        assert_eq!(forever.expires_at_ms, None);
        let hit = Execution::cache_hit("x.3", &forever).record(&key, "kubernetes", 5_000);
        assert_eq!(
            (
                hit.status,
                hit.cache_status,
                hit.cache_hit,
                hit.run_db_size_bytes
            ),
            (
                ExecutionStatus::Cached,
                Some(CacheOutcome::Hit),
                true,
                Some(10)
            )
        );
    }
}

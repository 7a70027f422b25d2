//! Executions of registered simulations, and the statistics drawn from
//! them: per version, per day, and over the whole catalog.

use super::*;

impl CatalogStore {
    /// Records (or updates) an execution; idempotent per execution id.
    pub async fn record_execution(&self, e: &ExecutionRecord) -> Result<()> {
        let env = e.environment.as_ref().map(Value::to_string);
        let params: Vec<Param> = vec![
            e.execution_id.as_str().into(),
            e.squid_id.as_str().into(),
            e.simulation_id.into(),
            e.user_id.clone().into(),
            e.started_at_ms.into(),
            e.completed_at_ms.into(),
            e.duration_seconds.into(),
            e.status.as_str().into(),
            e.executor_type.as_str().into(),
            e.cache_hit.into(),
            e.cache_status.map(CacheOutcome::as_str).into(),
            e.node.clone().into(),
            e.run_db_path.clone().into(),
            e.run_db_size_bytes.into(),
            e.input_hash.clone().into(),
            e.output_count.into(),
            e.artifact_count.into(),
            e.error_count.into(),
            e.warning_count.into(),
            env.into(),
            now_ms().into(),
        ];
        let r = self
            .sql
            .script(vec![Stmt::new(
                "INSERT INTO execution_registry (execution_id, squid_id, simulation_id, user_id, started_at_ms,
                    completed_at_ms, duration_seconds, status, executor_type, cache_hit, cache_status, node,
                    run_db_path, run_db_size_bytes, input_hash, output_count, artifact_count, error_count,
                    warning_count, environment, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
                 ON CONFLICT (execution_id) DO UPDATE SET completed_at_ms = excluded.completed_at_ms,
                    duration_seconds = excluded.duration_seconds, status = excluded.status,
                    cache_hit = excluded.cache_hit, cache_status = excluded.cache_status, node = excluded.node,
                    run_db_path = excluded.run_db_path, run_db_size_bytes = excluded.run_db_size_bytes,
                    output_count = excluded.output_count, artifact_count = excluded.artifact_count,
                    error_count = excluded.error_count, warning_count = excluded.warning_count,
                    environment = excluded.environment",
                params,
            )])
            .await;
        match r {
            Ok(_) => Ok(()),
            // A foreign-key failure means the simulation id does not exist.
            Err(StoreError::MissingReference(_)) => Err(StoreError::Conflict(format!(
                "simulation id {} is not registered",
                e.simulation_id
            ))),
            Err(e) => Err(e),
        }
    }

    /// Every simulation version recorded (up to 1,000), each with its
    /// statistics: the console's overview and `simcache catalog`.
    pub async fn versions_with_stats(&self) -> Result<Vec<(Simulation, SimulationStats)>> {
        let sims = self
            .search(&SearchQuery {
                limit: 1000,
                ..Default::default()
            })
            .await?;
        let mut out = Vec::with_capacity(sims.len());
        for s in sims {
            let st = self.stats(s.id).await?;
            out.push((s, st));
        }
        Ok(out)
    }

    pub async fn stats(&self, simulation_id: i64) -> Result<SimulationStats> {
        let rows = self
            .sql
            .query(
                "SELECT COUNT(*),
                    COALESCE(SUM(CASE WHEN status IN ('completed', 'succeeded', 'cached') THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0),
                    CAST(AVG(duration_seconds) AS DOUBLE PRECISION),
                    CAST(MIN(duration_seconds) AS DOUBLE PRECISION),
                    CAST(MAX(duration_seconds) AS DOUBLE PRECISION),
                    MAX(started_at_ms),
                    COUNT(duration_seconds)
                 FROM execution_registry WHERE simulation_id = $1",
                vec![simulation_id.into()],
            )
            .await?;
        let r = rows.first().cloned().unwrap_or(DbRow(vec![]));
        let total = r.i64(0).unwrap_or(0);
        let (ok, failed, cached) = (
            r.i64(1).unwrap_or(0),
            r.i64(2).unwrap_or(0),
            r.i64(3).unwrap_or(0),
        );
        let with_duration = r.i64(8).unwrap_or(0);
        // Nearest-rank 95th percentile, portable: the value at that offset.
        let p95 = if with_duration > 0 {
            let rank = ((0.95 * with_duration as f64).ceil() as i64 - 1).max(0);
            self.sql
                .query(
                    "SELECT duration_seconds FROM execution_registry
                     WHERE simulation_id = $1 AND duration_seconds IS NOT NULL
                     ORDER BY duration_seconds LIMIT 1 OFFSET $2",
                    vec![simulation_id.into(), rank.into()],
                )
                .await?
                .first()
                .and_then(|r| r.f64(0))
        } else {
            None
        };
        let finished = ok + failed;
        Ok(SimulationStats {
            total_executions: total,
            successful: ok,
            failed,
            cached,
            success_rate: (finished > 0).then(|| ok as f64 / finished as f64),
            cache_hit_rate: (total > 0).then(|| cached as f64 / total as f64),
            avg_duration: r.f64(4),
            min_duration: r.f64(5),
            max_duration: r.f64(6),
            p95_duration: p95,
            last_run_ms: r.i64(7),
        })
    }

    /// Executions by status and the computing time cache hits saved per day
    /// over the last `days` days.
    pub async fn activity(&self, days: i64) -> Result<Activity> {
        let rows = self
            .sql
            .query(
                "SELECT status, COUNT(*) FROM execution_registry GROUP BY status ORDER BY status",
                vec![],
            )
            .await?;
        let by_status = rows
            .iter()
            .filter_map(|r| Some((r.text(0)?, r.i64(1)?)))
            .collect();
        let since = now_ms() - days.clamp(1, 3660) * 86_400_000;
        let rows = self
            .sql
            .query(
                "SELECT (h.created_at_ms / 86400000) * 86400000 AS day,
                    CAST(SUM(COALESCE((SELECT MAX(c.duration_seconds) FROM execution_registry c
                        WHERE c.simulation_id = h.simulation_id AND c.input_hash = h.input_hash
                          AND NOT c.cache_hit), 0)) AS DOUBLE PRECISION)
                 FROM execution_registry h WHERE h.cache_hit AND h.created_at_ms >= $1
                 GROUP BY day ORDER BY day",
                vec![since.into()],
            )
            .await?;
        let saved_by_day = rows
            .iter()
            .filter_map(|r| Some((r.i64(0)?, r.f64(1).unwrap_or(0.0))))
            .collect();
        Ok(Activity {
            by_status,
            saved_by_day,
        })
    }

    pub async fn overview(&self) -> Result<Overview> {
        let rows = self
            .sql
            .query(
                "SELECT (SELECT COUNT(*) FROM simulations),
                        (SELECT COUNT(*) FROM simulations WHERE status = 'active'),
                        (SELECT COUNT(*) FROM execution_registry),
                        (SELECT COUNT(*) FROM execution_registry WHERE status IN ('completed', 'succeeded', 'cached')),
                        (SELECT COUNT(*) FROM execution_registry WHERE cache_hit)",
                vec![],
            )
            .await?;
        let r = rows.first().cloned().unwrap_or(DbRow(vec![]));
        Ok(Overview {
            total_simulations: r.i64(0).unwrap_or(0),
            active_simulations: r.i64(1).unwrap_or(0),
            total_executions: r.i64(2).unwrap_or(0),
            successful_executions: r.i64(3).unwrap_or(0),
            cached_executions: r.i64(4).unwrap_or(0),
        })
    }
}

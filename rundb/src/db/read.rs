//! Reading a run back: its summary, values, logs, metrics, artifacts,
//! provenance and tags, and copies of the whole database.

use super::*;

impl RunDb {
    /// The run's summary (counts are exact), or `None` before `initialize_run`.
    pub fn get_summary(&self) -> Result<Option<RunSummary>> {
        Ok(self
            .conn
            .query_row(
                "SELECT execution_id, squid_id, simulation_name, simulation_version, simulation_id,
                    started_at, completed_at, duration_seconds, status, executor_type, cache_key,
                    cache_hit, user_id, session_id, error_message, error_traceback, input_count,
                    output_count, artifact_count, log_count, error_count, warning_count,
                    metric_count, artifact_bytes
                 FROM run_summary LIMIT 1",
                [],
                |r| {
                    Ok(RunSummary {
                        execution_id: r.get(0)?,
                        squid_id: r.get(1)?,
                        simulation_name: r.get(2)?,
                        simulation_version: r.get(3)?,
                        simulation_id: r.get(4)?,
                        started_at: r.get(5)?,
                        completed_at: r.get(6)?,
                        duration_seconds: r.get(7)?,
                        status: r.get(8)?,
                        executor_type: r.get(9)?,
                        cache_key: r.get(10)?,
                        cache_hit: r.get::<_, Option<bool>>(11)?.unwrap_or(false),
                        user_id: r.get(12)?,
                        session_id: r.get(13)?,
                        error_message: r.get(14)?,
                        error_traceback: r.get(15)?,
                        input_count: r.get(16)?,
                        output_count: r.get(17)?,
                        artifact_count: r.get(18)?,
                        log_count: r.get(19)?,
                        error_count: r.get(20)?,
                        warning_count: r.get(21)?,
                        metric_count: r.get(22)?,
                        artifact_bytes: r.get(23)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn get_inputs(&self) -> Result<BTreeMap<String, StoredValue>> {
        self.values(
            "SELECT name, value, type, units, description, min_value, max_value,
                default_value, NULL, metadata FROM inputs ORDER BY id",
        )
    }

    pub fn get_outputs(&self) -> Result<BTreeMap<String, StoredValue>> {
        self.values(
            "SELECT name, value, type, units, description, min_value, max_value,
                default_value, file_reference, metadata FROM outputs ORDER BY created_at, id",
        )
    }

    pub(super) fn values(&self, sql: &str) -> Result<BTreeMap<String, StoredValue>> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                StoredValue {
                    value: parse_json(r.get(1)?).unwrap_or(Value::Null),
                    value_type: r.get(2)?,
                    units: r.get(3)?,
                    description: r.get(4)?,
                    min: r.get(5)?,
                    max: r.get(6)?,
                    default: parse_json(r.get(7)?),
                    file_reference: r.get(8)?,
                    metadata: parse_json(r.get(9)?),
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Log lines, newest first; `level` keeps only that level.
    pub fn get_logs(&self, level: Option<LogLevel>, limit: Option<u32>) -> Result<Vec<StoredLog>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, timestamp, level, logger, message, context, exception_type,
                exception_message, stack_trace FROM logs
             WHERE ?1 IS NULL OR level = ?1 ORDER BY timestamp DESC, id DESC LIMIT ?2",
        )?;
        let limit = limit.map(i64::from).unwrap_or(-1);
        let rows = stmt.query_map(params![level.map(LogLevel::as_str), limit], log_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// ERROR and CRITICAL lines, newest first.
    pub fn get_errors(&self) -> Result<Vec<StoredLog>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, timestamp, level, logger, message, context, exception_type,
                exception_message, stack_trace FROM logs
             WHERE level IN ('ERROR', 'CRITICAL') ORDER BY timestamp DESC, id DESC",
        )?;
        let rows = stmt.query_map([], log_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Metric points in the order recorded; optionally one category and/or name.
    pub fn get_metrics(
        &self,
        category: Option<MetricCategory>,
        name: Option<&str>,
    ) -> Result<Vec<StoredMetric>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, timestamp, metric_name, metric_value, metric_unit, category, step, metadata
             FROM metrics WHERE (?1 IS NULL OR category = ?1) AND (?2 IS NULL OR metric_name = ?2)
             ORDER BY id",
        )?;
        let rows = stmt.query_map(params![category.map(MetricCategory::as_str), name], |r| {
            Ok(StoredMetric {
                id: r.get(0)?,
                timestamp: r.get(1)?,
                name: r.get(2)?,
                value: r.get(3)?,
                unit: r.get(4)?,
                category: r.get(5)?,
                step: r.get(6)?,
                metadata: parse_json(r.get(7)?),
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn get_artifacts(&self) -> Result<Vec<ArtifactInfo>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{ARTIFACT_SELECT} ORDER BY id"))?;
        let rows = stmt.query_map([], artifact_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn artifact(&self, name: &str) -> Result<Option<ArtifactInfo>> {
        Ok(self
            .conn
            .query_row(
                &format!("{ARTIFACT_SELECT} WHERE name = ?1 ORDER BY id DESC LIMIT 1"),
                [name],
                artifact_row,
            )
            .optional()?)
    }

    /// Streams artifact `name` into `out`; returns the number of bytes.
    /// External artifacts are read from their path.
    pub fn read_artifact(&self, name: &str, out: &mut impl Write) -> Result<u64> {
        let info = self
            .artifact(name)?
            .ok_or_else(|| RunDbError::NotFound(format!("artifact {name:?}")))?;
        if let Some(ext) = &info.external_path {
            let mut f = std::fs::File::open(ext).map_err(|e| RunDbError::io(ext, e))?;
            return std::io::copy(&mut f, out).map_err(|e| RunDbError::io(ext, e));
        }
        let has_data: bool = self.conn.query_row(
            "SELECT data IS NOT NULL FROM artifacts WHERE id = ?1",
            [info.id],
            |r| r.get(0),
        )?;
        if !has_data {
            return Ok(0);
        }
        let mut blob =
            self.conn
                .blob_open(rusqlite::MAIN_DB, "artifacts", "data", info.id, true)?;
        std::io::copy(&mut blob, out).map_err(|e| RunDbError::io(&self.path, e))
    }

    /// Writes artifact `name` to the file `dest` (streamed); returns its size.
    pub fn export_artifact(&self, name: &str, dest: &Path) -> Result<u64> {
        let tmp = dest.with_extension("partial");
        let mut f = std::fs::File::create(&tmp).map_err(|e| RunDbError::io(&tmp, e))?;
        let n = match self.read_artifact(name, &mut f) {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        f.sync_all().map_err(|e| RunDbError::io(&tmp, e))?;
        std::fs::rename(&tmp, dest).map_err(|e| RunDbError::io(dest, e))?;
        Ok(n)
    }

    /// The run-level provenance, if recorded.
    pub fn get_provenance(&self) -> Result<Option<Provenance>> {
        let row = self
            .conn
            .query_row(
                "SELECT host, image, image_digest, command, environment, input_hash
                 FROM run_provenance WHERE id = 1",
                [],
                |r| {
                    Ok(Provenance {
                        host: r.get(0)?,
                        image: r.get(1)?,
                        image_digest: r.get(2)?,
                        command: parse_json(r.get(3)?)
                            .and_then(|v| serde_json::from_value(v).ok())
                            .unwrap_or_default(),
                        environment: parse_json(r.get(4)?)
                            .and_then(|v| serde_json::from_value(v).ok())
                            .unwrap_or_default(),
                        parent_execution_ids: Vec::new(),
                        input_hash: r.get(5)?,
                    })
                },
            )
            .optional()?;
        let Some(mut p) = row else { return Ok(None) };
        let mut stmt = self
            .conn
            .prepare("SELECT parent_execution_id FROM run_parents ORDER BY rowid")?;
        p.parent_execution_ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(p))
    }

    pub fn get_tags(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT t.tag FROM run_tags r JOIN tags t ON t.id = r.tag_id ORDER BY t.tag",
        )?;
        Ok(stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?)
    }

    /// A consistent copy of the live database at `dest`, taken with SQLite's
    /// online backup while writers may continue.
    pub fn snapshot_to(&self, dest: &Path) -> Result<()> {
        let mut out = Connection::open(dest)?;
        {
            let backup = rusqlite::backup::Backup::new(&self.conn, &mut out)?;
            // All pages in one step: one read transaction, so one consistent state.
            backup.step(-1)?;
        }
        // A single self-contained file (no -wal beside it).
        out.pragma_update(None, "journal_mode", "DELETE")?;
        Ok(())
    }

    /// Size of the database file plus its WAL.
    pub fn size_bytes(&self) -> u64 {
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        [self.path.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Folds the WAL back into the main file (e.g. before copying the file).
    pub fn checkpoint(&self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

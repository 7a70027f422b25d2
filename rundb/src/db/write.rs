//! Writing a run: its initialisation, typed inputs and outputs, logs,
//! metrics, tags, resource usage, artifacts, provenance and completion.

use super::*;

impl RunDb {
    /// Records the run's start (`status = running`). A second call fails.
    pub fn initialize_run(&mut self, init: &RunInit) -> Result<()> {
        if init.simulation_name.is_empty() || init.simulation_version.is_empty() {
            return Err(RunDbError::Invalid(
                "simulation_name and simulation_version are required".into(),
            ));
        }
        if self.status.is_some() {
            return Err(RunDbError::AlreadyInitialized);
        }
        self.conn.execute(
            "INSERT INTO run_metadata (execution_id, squid_id, simulation_name, simulation_version,
                simulation_id, started_at, status, executor_type, executor_config, cache_key,
                cache_hit, user_id, session_id, environment, notes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            params![
                self.execution_id,
                init.squid_id,
                init.simulation_name,
                init.simulation_version,
                init.simulation_id,
                now_text(),
                init.executor_type.as_deref().unwrap_or("local"),
                json_text(&init.executor_config),
                init.cache_key,
                init.cache_hit,
                init.user_id,
                init.session_id,
                json_text(&init.environment),
                init.notes,
            ],
        )?;
        self.status = Some(RunStatus::Running);
        Ok(())
    }

    /// Saves one input after checking it against its spec (last write wins).
    pub fn save_input(&mut self, name: &str, value: &Value, spec: &ParamSpec) -> Result<()> {
        self.save_values("inputs", &[(name, value, spec, None)])
    }

    /// Saves one output after checking it against its spec (last write wins).
    pub fn save_output(
        &mut self,
        name: &str,
        value: &Value,
        spec: &ParamSpec,
        file_reference: Option<&str>,
    ) -> Result<()> {
        self.save_values("outputs", &[(name, value, spec, file_reference)])
    }

    /// Saves several inputs atomically: all are checked first; any bad one
    /// stores none.
    pub fn save_inputs(&mut self, values: &[(&str, &Value, &ParamSpec)]) -> Result<()> {
        let v: Vec<_> = values.iter().map(|(n, v, s)| (*n, *v, *s, None)).collect();
        self.save_values("inputs", &v)
    }

    /// Saves several outputs atomically (see [`RunDb::save_inputs`]).
    pub fn save_outputs(&mut self, values: &[(&str, &Value, &ParamSpec)]) -> Result<()> {
        let v: Vec<_> = values
            .iter()
            .map(|(n, v, s)| {
                let file_ref = match s.value_type {
                    crate::params::ValueType::File => v.as_str(),
                    _ => None,
                };
                (*n, *v, *s, file_ref)
            })
            .collect();
        self.save_values("outputs", &v)
    }

    pub(super) fn save_values(
        &mut self,
        table: &'static str,
        values: &[(&str, &Value, &ParamSpec, Option<&str>)],
    ) -> Result<()> {
        self.ensure_writable()?;
        for (name, value, spec, _) in values {
            if name.is_empty() || name.len() > 256 {
                return Err(RunDbError::Invalid(format!(
                    "value name {name:?} must be 1 to 256 characters"
                )));
            }
            spec.check(name, value)?;
        }
        let tx = self.conn.transaction()?;
        {
            let sql = if table == "inputs" {
                "INSERT INTO inputs (name, type, value, units, description, min_value, max_value,
                    default_value, choices)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(name) DO UPDATE SET type = excluded.type, value = excluded.value,
                    value_blob = NULL, units = excluded.units, description = excluded.description,
                    min_value = excluded.min_value, max_value = excluded.max_value,
                    default_value = excluded.default_value, choices = excluded.choices"
            } else {
                "INSERT INTO outputs (name, type, value, units, description, min_value, max_value,
                    default_value, choices, file_reference, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT(name) DO UPDATE SET type = excluded.type, value = excluded.value,
                    value_blob = NULL, units = excluded.units, description = excluded.description,
                    min_value = excluded.min_value, max_value = excluded.max_value,
                    default_value = excluded.default_value, choices = excluded.choices,
                    file_reference = excluded.file_reference, created_at = excluded.created_at"
            };
            let mut stmt = tx.prepare_cached(sql)?;
            let now = now_text();
            for (name, value, spec, file_ref) in values {
                let default = spec.default.as_ref().map(Value::to_string);
                let choices = spec
                    .choices
                    .as_ref()
                    .map(|c| Value::Array(c.clone()).to_string());
                if table == "inputs" {
                    stmt.execute(params![
                        name,
                        spec.value_type.as_str(),
                        value.to_string(),
                        spec.units,
                        spec.description,
                        spec.min,
                        spec.max,
                        default,
                        choices,
                    ])?;
                } else {
                    stmt.execute(params![
                        name,
                        spec.value_type.as_str(),
                        value.to_string(),
                        spec.units,
                        spec.description,
                        spec.min,
                        spec.max,
                        default,
                        choices,
                        file_ref,
                        now,
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Appends one log line (its own transaction).
    pub fn log(&mut self, line: &LogLine) -> Result<()> {
        self.log_batch(std::slice::from_ref(line))
    }

    /// Appends log lines in one transaction: all or none.
    pub fn log_batch(&mut self, lines: &[LogLine]) -> Result<()> {
        self.ensure_writable()?;
        let stamps = stamps(lines.iter().map(|l| l.timestamp))?;
        // Up to one statement's worth of rows is atomic without an explicit
        // transaction (saves BEGIN/COMMIT on the single-insert path).
        let tx = Batch::begin(&mut self.conn, lines.len())?;
        insert_many(
            &tx,
            "INSERT INTO logs (timestamp, level, logger, message, context, exception_type,
                exception_message, stack_trace) VALUES ",
            8,
            lines.iter().zip(&stamps),
            |stmt, i, (l, ts)| {
                stmt.raw_bind_parameter(i, ts.as_str())?;
                stmt.raw_bind_parameter(i + 1, l.level.as_str())?;
                stmt.raw_bind_parameter(i + 2, &l.logger)?;
                stmt.raw_bind_parameter(i + 3, &l.message)?;
                stmt.raw_bind_parameter(i + 4, json_text(&l.context))?;
                stmt.raw_bind_parameter(i + 5, &l.exception_type)?;
                stmt.raw_bind_parameter(i + 6, &l.exception_message)?;
                stmt.raw_bind_parameter(i + 7, &l.stack_trace)
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records one metric point (its own transaction).
    pub fn record_metric(&mut self, m: &Metric) -> Result<()> {
        self.record_metrics(std::slice::from_ref(m))
    }

    /// Records metric points in one transaction: all or none.
    pub fn record_metrics(&mut self, metrics: &[Metric]) -> Result<()> {
        self.ensure_writable()?;
        for m in metrics {
            if m.name.is_empty() {
                return Err(RunDbError::Invalid("metric name must not be empty".into()));
            }
            if !m.value.is_finite() {
                return Err(RunDbError::Invalid(format!(
                    "metric {}: value must be a finite number",
                    m.name
                )));
            }
        }
        let stamps = stamps(metrics.iter().map(|m| m.timestamp))?;
        // Up to one statement's worth of rows is atomic without an explicit
        // transaction (saves BEGIN/COMMIT on the single-insert path).
        let tx = Batch::begin(&mut self.conn, metrics.len())?;
        insert_many(
            &tx,
            "INSERT INTO metrics (timestamp, metric_name, metric_value, metric_unit, category,
                step, metadata) VALUES ",
            7,
            metrics.iter().zip(&stamps),
            |stmt, i, (m, ts)| {
                stmt.raw_bind_parameter(i, ts.as_str())?;
                stmt.raw_bind_parameter(i + 1, &m.name)?;
                stmt.raw_bind_parameter(i + 2, m.value)?;
                stmt.raw_bind_parameter(i + 3, &m.unit)?;
                stmt.raw_bind_parameter(i + 4, m.category.as_str())?;
                stmt.raw_bind_parameter(i + 5, m.step)?;
                stmt.raw_bind_parameter(i + 6, json_text(&m.metadata))
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Adds a tag to the run (idempotent).
    pub fn add_tag(&mut self, tag: &str) -> Result<()> {
        self.ensure_writable()?;
        if tag.is_empty() {
            return Err(RunDbError::Invalid("tag must not be empty".into()));
        }
        let tx = self.conn.transaction()?;
        tx.execute("INSERT OR IGNORE INTO tags (tag) VALUES (?1)", [tag])?;
        tx.execute(
            "INSERT OR IGNORE INTO run_tags (tag_id) SELECT id FROM tags WHERE tag = ?1",
            [tag],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records a resource sample (CPU %, memory MB, …).
    pub fn save_resource_usage(
        &mut self,
        cpu_percent: Option<f64>,
        memory_mb: Option<f64>,
    ) -> Result<()> {
        self.ensure_writable()?;
        self.conn.execute(
            "INSERT INTO resource_usage (timestamp, cpu_percent, memory_mb) VALUES (?1, ?2, ?3)",
            params![now_text(), cpu_percent, memory_mb],
        )?;
        Ok(())
    }

    /// Stores an artifact from memory.
    pub fn add_artifact_bytes(
        &mut self,
        name: &str,
        bytes: &[u8],
        content_type: Option<&str>,
        category: ArtifactCategory,
    ) -> Result<ArtifactInfo> {
        self.add_artifact_reader(
            name,
            bytes,
            bytes.len() as u64,
            content_type,
            category,
            None,
        )
    }

    /// Stores an artifact from a file, streamed in chunks (never loaded whole).
    pub fn add_artifact_file(
        &mut self,
        name: &str,
        path: &Path,
        content_type: Option<&str>,
        category: ArtifactCategory,
    ) -> Result<ArtifactInfo> {
        let file = std::fs::File::open(path).map_err(|e| RunDbError::io(path, e))?;
        let len = file.metadata().map_err(|e| RunDbError::io(path, e))?.len();
        self.add_artifact_reader(
            name,
            file,
            len,
            content_type,
            category,
            Some(&path.display().to_string()),
        )
    }

    /// Stores `len` bytes read from `reader` as artifact `name` (replacing an
    /// artifact of that name). The bytes are streamed into an incremental blob;
    /// size and SHA-256 are computed on the way. A reader that ends early or
    /// runs long stores nothing.
    pub fn add_artifact_reader(
        &mut self,
        name: &str,
        mut reader: impl Read,
        len: u64,
        content_type: Option<&str>,
        category: ArtifactCategory,
        source_path: Option<&str>,
    ) -> Result<ArtifactInfo> {
        self.ensure_writable()?;
        check_artifact_name(name)?;
        if len > MAX_ARTIFACT_BYTES {
            return Err(RunDbError::Invalid(format!(
                "artifact {name}: {len} bytes is more than the {MAX_ARTIFACT_BYTES} stored in a run database"
            )));
        }
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM artifacts WHERE name = ?1", [name])?;
        tx.execute(
            "INSERT INTO artifacts (name, path, content_type, size_bytes, category, data, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, zeroblob(?4), ?6)",
            params![name, source_path, content_type, len as i64, category.as_str(), now_text()],
        )?;
        let id = tx.last_insert_rowid();
        let mut hasher = Sha256::new();
        {
            let mut blob = tx.blob_open(rusqlite::MAIN_DB, "artifacts", "data", id, false)?;
            let mut buf = vec![0u8; CHUNK];
            let mut written: u64 = 0;
            loop {
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| RunDbError::io(source_path.unwrap_or(name), e))?;
                if n == 0 {
                    break;
                }
                if written + n as u64 > len {
                    return Err(RunDbError::Invalid(format!(
                        "artifact {name}: more than the announced {len} bytes"
                    )));
                }
                blob.write_all(&buf[..n])
                    .map_err(|e| RunDbError::io(&self.path, e))?;
                hasher.update(&buf[..n]);
                written += n as u64;
            }
            if written != len {
                return Err(RunDbError::Invalid(format!(
                    "artifact {name}: got {written} bytes, announced {len}"
                )));
            }
        }
        let sha = hex::encode(hasher.finalize());
        tx.execute(
            "UPDATE artifacts SET content_hash = ?1 WHERE id = ?2",
            params![sha, id],
        )?;
        tx.commit()?;
        self.artifact(name)?
            .ok_or_else(|| RunDbError::NotFound(format!("artifact {name}")))
    }

    /// Records a reference to a file that stays outside the database.
    pub fn add_external_artifact(
        &mut self,
        name: &str,
        external_path: &str,
        content_type: Option<&str>,
        category: ArtifactCategory,
    ) -> Result<ArtifactInfo> {
        self.ensure_writable()?;
        check_artifact_name(name)?;
        // Hash and size when the file is reachable, streamed in chunks.
        let (sha, size) = match std::fs::File::open(external_path) {
            Ok(mut f) => {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; CHUNK];
                let mut size = 0u64;
                loop {
                    let n = f
                        .read(&mut buf)
                        .map_err(|e| RunDbError::io(external_path, e))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    size += n as u64;
                }
                (Some(hex::encode(h.finalize())), size as i64)
            }
            Err(_) => (None, 0),
        };
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM artifacts WHERE name = ?1", [name])?;
        tx.execute(
            "INSERT INTO artifacts (name, content_hash, content_type, size_bytes, category,
                external_path, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name,
                sha,
                content_type,
                size,
                category.as_str(),
                external_path,
                now_text()
            ],
        )?;
        tx.commit()?;
        self.artifact(name)?
            .ok_or_else(|| RunDbError::NotFound(format!("artifact {name}")))
    }

    /// Records run-level provenance (replacing an earlier record) and the
    /// parent runs; per-entity rows mark inputs as user-provided.
    pub fn record_provenance(&mut self, p: &Provenance) -> Result<()> {
        self.ensure_writable()?;
        for parent in &p.parent_execution_ids {
            validate_execution_id(parent)?;
        }
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO run_provenance (id, host, image, image_digest, command,
                environment, input_hash, recorded_at) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                p.host,
                p.image,
                p.image_digest,
                serde_json::to_string(&p.command).unwrap_or_default(),
                serde_json::to_string(&p.environment).unwrap_or_default(),
                p.input_hash,
                now_text(),
            ],
        )?;
        for parent in &p.parent_execution_ids {
            tx.execute(
                "INSERT OR IGNORE INTO run_parents (parent_execution_id) VALUES (?1)",
                [parent],
            )?;
            tx.execute(
                "INSERT INTO provenance (entity_type, entity_name, source_type, source_reference)
                 VALUES ('intermediate', 'run', 'derived_from', ?1)",
                [parent],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Ends the run. `duration` defaults to the time since `initialize_run`.
    pub fn complete_run(
        &mut self,
        status: RunStatus,
        duration_seconds: Option<f64>,
        error_message: Option<&str>,
        error_traceback: Option<&str>,
    ) -> Result<()> {
        if status == RunStatus::Running {
            return Err(RunDbError::Invalid(
                "a run cannot be completed with status running".into(),
            ));
        }
        if let Some(d) = duration_seconds
            && !(d.is_finite() && d >= 0.0)
        {
            return Err(RunDbError::Invalid(format!(
                "duration_seconds must be a non-negative number, got {d}"
            )));
        }
        match self.status {
            None => return Err(RunDbError::NotInitialized),
            Some(RunStatus::Running) => {}
            Some(s) => return Err(RunDbError::Completed(s.to_string())),
        }
        self.conn.execute(
            "UPDATE run_metadata SET status = ?1, completed_at = ?2,
                duration_seconds = COALESCE(?3, (julianday(?2) - julianday(started_at)) * 86400.0),
                error_message = ?4, error_traceback = ?5
             WHERE execution_id = ?6",
            params![
                status.as_str(),
                now_text(),
                duration_seconds,
                error_message,
                error_traceback,
                self.execution_id,
            ],
        )?;
        self.status = Some(status);
        Ok(())
    }
}

//! `RunDb`: one open run database, its writers and readers.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Result, RunDbError};
use crate::location::{default_base_path, run_db_path, validate_execution_id};
use crate::params::ParamSpec;
use crate::records::*;
use crate::schema;

/// Largest artifact stored inside the database (SQLite's default blob limit).
pub const MAX_ARTIFACT_BYTES: u64 = 1_000_000_000;

/// Chunk size for streaming artifacts in and out.
const CHUNK: usize = 64 * 1024;

/// One run database. Not `Sync`: share it behind a mutex.
pub struct RunDb {
    conn: Connection,
    path: PathBuf,
    execution_id: String,
    /// Cached `run_metadata.status`; `None` before `initialize_run`.
    status: Option<RunStatus>,
}

/// Now as sim2l writes timestamps: naive UTC with microseconds.
pub(crate) fn now_text() -> String {
    format_unix(time::OffsetDateTime::now_utc())
}

fn format_unix(t: time::OffsetDateTime) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]"
    );
    t.format(&fmt).unwrap_or_default()
}

fn unix_text(secs: Option<f64>) -> Result<String> {
    match secs {
        None => Ok(now_text()),
        Some(s) if s.is_finite() && (0.0..1.0e11).contains(&s) => {
            let nanos = (s * 1e9) as i128;
            time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                .map(format_unix)
                .map_err(|e| RunDbError::Invalid(format!("timestamp {s}: {e}")))
        }
        Some(s) => Err(RunDbError::Invalid(format!(
            "timestamp {s} is not Unix seconds between 1970 and 5138"
        ))),
    }
}

/// Timestamps for a batch: records without their own share one "now" (they
/// arrived together; `id` keeps their order).
fn stamps(given: impl Iterator<Item = Option<f64>>) -> Result<Vec<String>> {
    let now = now_text();
    given
        .map(|t| match t {
            None => Ok(now.clone()),
            Some(_) => unix_text(t),
        })
        .collect()
}

fn json_text(v: &Option<Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.to_string()),
    }
}

fn parse_json(s: Option<String>) -> Option<Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // NORMAL in WAL mode: a committed transaction survives the process being
    // killed (it is in the WAL in the OS cache); only power loss can drop the
    // last ones. That is the contract the kill test checks.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A run writes in bursts: a bigger page cache and fewer, larger WAL
    // checkpoints keep batched inserts from re-reading and re-copying pages.
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.pragma_update(None, "wal_autocheckpoint", 4_000)?;
    Ok(())
}

impl RunDb {
    /// Opens (creating if needed) `{base}/{execution_id}.db`.
    pub fn open_in(base: &Path, execution_id: &str) -> Result<RunDb> {
        let path = run_db_path(base, execution_id)?;
        RunDb::open(&path, execution_id)
    }

    /// Opens under the default base path (`SIMCACHE_RUN_DB_BASE_PATH` or `~/.simcache/runs`).
    pub fn open_default(execution_id: &str) -> Result<RunDb> {
        RunDb::open_in(&default_base_path(), execution_id)
    }

    /// Opens (creating if needed) the run database at an explicit path and
    /// brings its schema up to date.
    pub fn open(path: &Path, execution_id: &str) -> Result<RunDb> {
        validate_execution_id(execution_id)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| RunDbError::io(dir, e))?;
        }
        let mut conn = Connection::open(path)?;
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        let status = Self::load_status(&conn, execution_id)?;
        Ok(RunDb {
            conn,
            path: path.to_path_buf(),
            execution_id: execution_id.to_string(),
            status,
        })
    }

    /// Opens an existing run database without writing to it (introspection).
    /// The execution id is read from the file. Databases in an older schema
    /// must be opened once with [`RunDb::open`] to migrate them.
    pub fn open_read_only(path: &Path) -> Result<RunDb> {
        if !path.exists() {
            return Err(RunDbError::NotFound(format!(
                "run database {}",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let v = schema::version(&conn)?;
        if v != schema::SCHEMA_VERSION {
            return Err(RunDbError::Invalid(format!(
                "{} has schema version {v}, expected {}",
                path.display(),
                schema::SCHEMA_VERSION
            )));
        }
        let id: Option<String> = conn
            .query_row("SELECT execution_id FROM run_metadata LIMIT 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        let id = id.ok_or(RunDbError::NotInitialized)?;
        let status = Self::load_status(&conn, &id)?;
        Ok(RunDb {
            conn,
            path: path.to_path_buf(),
            execution_id: id,
            status,
        })
    }

    /// The schema version of a run database file, without opening it for writing.
    pub fn file_schema_version(path: &Path) -> Result<i64> {
        if !path.exists() {
            return Err(RunDbError::NotFound(format!(
                "run database {}",
                path.display()
            )));
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        schema::version(&conn)
    }

    fn load_status(conn: &Connection, id: &str) -> Result<Option<RunStatus>> {
        let s: Option<String> = conn
            .query_row(
                "SELECT status FROM run_metadata WHERE execution_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(s.and_then(|s| s.parse().ok()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// `None` before `initialize_run`.
    pub fn status(&self) -> Option<RunStatus> {
        self.status
    }

    pub fn schema_version(&self) -> Result<i64> {
        schema::version(&self.conn)
    }

    /// Writes are refused once the run has completed, failed or been cached.
    fn ensure_writable(&self) -> Result<()> {
        match self.status {
            Some(s) if s != RunStatus::Running => Err(RunDbError::Completed(s.to_string())),
            _ => Ok(()),
        }
    }

    // ---------------------------------------------------------------- writers

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

    fn save_values(
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
            spec.check(name, value).map_err(RunDbError::Invalid)?;
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

    // ---------------------------------------------------------------- readers

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

    fn values(&self, sql: &str) -> Result<BTreeMap<String, StoredValue>> {
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

/// A transaction only when the rows need more than one statement.
enum Batch<'c> {
    Single(&'c Connection),
    Tx(rusqlite::Transaction<'c>),
}

impl<'c> Batch<'c> {
    fn begin(conn: &'c mut Connection, rows: usize) -> rusqlite::Result<Batch<'c>> {
        if rows <= ROWS_PER_STATEMENT {
            Ok(Batch::Single(conn))
        } else {
            conn.transaction().map(Batch::Tx)
        }
    }

    fn commit(self) -> rusqlite::Result<()> {
        match self {
            Batch::Single(_) => Ok(()),
            Batch::Tx(tx) => tx.commit(),
        }
    }
}

impl std::ops::Deref for Batch<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            Batch::Single(c) => c,
            Batch::Tx(tx) => tx,
        }
    }
}

/// Rows per multi-row INSERT: one statement step per 64 rows instead of one
/// per row roughly halves the cost of a batch.
const ROWS_PER_STATEMENT: usize = 64;

/// Inserts `rows` with multi-row `INSERT ... VALUES (..), (..)` statements;
/// `bind` binds one row's `cols` parameters starting at the given index.
fn insert_many<T>(
    conn: &Connection,
    head: &str,
    cols: usize,
    rows: impl Iterator<Item = T>,
    bind: impl Fn(&mut rusqlite::Statement<'_>, usize, T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut rows = rows.peekable();
    while rows.peek().is_some() {
        let chunk: Vec<T> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        let mut sql = String::with_capacity(head.len() + chunk.len() * (cols * 2 + 3));
        sql.push_str(head);
        for r in 0..chunk.len() {
            if r > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..cols {
                if c > 0 {
                    sql.push(',');
                }
                sql.push('?');
            }
            sql.push(')');
        }
        let mut stmt = conn.prepare_cached(&sql)?;
        for (r, row) in chunk.into_iter().enumerate() {
            bind(&mut stmt, r * cols + 1, row)?;
        }
        stmt.raw_execute()?;
    }
    Ok(())
}

fn check_artifact_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(RunDbError::Invalid(format!(
            "artifact name {name:?} must be 1 to 256 printable characters"
        )));
    }
    Ok(())
}

const ARTIFACT_SELECT: &str = "SELECT id, name, path, content_type, category, size_bytes,
    content_hash, external_path, description, created_at FROM artifacts";

fn artifact_row(r: &Row<'_>) -> rusqlite::Result<ArtifactInfo> {
    Ok(ArtifactInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        path: r.get(2)?,
        content_type: r.get(3)?,
        category: r.get(4)?,
        size_bytes: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
        sha256: r.get(6)?,
        external_path: r.get(7)?,
        description: r.get(8)?,
        created_at: r.get(9)?,
    })
}

fn log_row(r: &Row<'_>) -> rusqlite::Result<StoredLog> {
    Ok(StoredLog {
        id: r.get(0)?,
        timestamp: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
        level: r.get(2)?,
        logger: r.get(3)?,
        message: r.get(4)?,
        context: parse_json(r.get(5)?),
        exception_type: r.get(6)?,
        exception_message: r.get(7)?,
        stack_trace: r.get(8)?,
    })
}

//! `RunDb`: one open run database, its writers and readers.

mod read;
mod write;

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

    // ---------------------------------------------------------------- readers
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

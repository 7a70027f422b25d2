//! SQLite access for async callers.
//!
//! SQLite allows one writer at a time, so all writes go through a single writer
//! thread that owns the write connection and commits jobs in groups: whatever is
//! queued when a transaction starts rides in it, each job inside its own savepoint
//! so one failing job does not undo its neighbours. A job's caller hears back only
//! after COMMIT returned, so an acknowledged write is a committed write. Reads run
//! on a few reader threads with their own connections (WAL lets them read while the
//! writer writes).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::error::{Result, StoreError};
use crate::migrate::{self, Migration};

/// Largest number of jobs committed in one transaction.
const MAX_GROUP: usize = 512;

trait WriteJob: Send {
    /// Runs the job inside the open transaction; true when it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Delivers the result once the fate of the transaction is known.
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct Job<F, R> {
    f: Option<F>,
    result: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

impl<F, R> WriteJob for Job<F, R>
where
    F: FnOnce(&Connection) -> Result<R> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else { return false };
        let r = f(conn);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        let out = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Database("write job was not run".into())),
        };
        // The caller may have gone away (request cancelled); nothing to do then.
        let _ = self.reply.send(out);
    }
}

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// A handle to one SQLite database file; cheap to clone.
#[derive(Clone)]
pub struct SqliteDb {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    writer: Sender<Box<dyn WriteJob>>,
    readers: Sender<ReadJob>,
    path: PathBuf,
    _threads: Vec<JoinHandle<()>>,
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Switching a new file to WAL needs an exclusive lock and, when another
    // process is opening the same file, fails with "locked" at once instead
    // of waiting: retry for as long as the busy timeout would have waited.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
    // NORMAL in WAL mode: a committed transaction survives a process crash; only
    // an OS crash or power loss can lose the last moments. Right for a cache.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl SqliteDb {
    /// Opens (creating if needed) the database at `path`, applies `migrations`
    /// and starts the writer and `readers` reader threads. Blocking: call it
    /// from start-up code or `spawn_blocking`.
    pub fn open(path: &Path, migrations: &[Migration], readers: usize) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()).into())
            })?;
        }
        let mut wconn = Connection::open(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot open {}: {e}", path.display()).into())
        })?;
        configure(&wconn)?;
        migrate::apply_sqlite(&mut wconn, migrations)?;

        let (wtx, wrx) = crossbeam_channel::unbounded::<Box<dyn WriteJob>>();
        let (rtx, rrx) = crossbeam_channel::unbounded::<ReadJob>();
        let mut threads = Vec::new();
        threads.push(
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || writer_loop(wconn, wrx))
                .map_err(|e| StoreError::Unavailable(format!("spawn writer: {e}").into()))?,
        );
        for i in 0..readers.max(1) {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            let rx = rrx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sqlite-reader-{i}"))
                    .spawn(move || reader_loop(conn, rx))
                    .map_err(|e| StoreError::Unavailable(format!("spawn reader: {e}").into()))?,
            );
        }
        Ok(SqliteDb {
            inner: std::sync::Arc::new(Inner {
                writer: wtx,
                readers: rtx,
                path: path.to_path_buf(),
                _threads: threads,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in the next group-committed write transaction.
    pub async fn write<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Box::new(Job {
            f: Some(f),
            result: None,
            reply: tx,
        });
        self.inner
            .writer
            .send(job)
            .map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("sqlite writer stopped".into()))?
    }

    /// Runs `f` on a reader connection.
    pub async fn read<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.inner
            .readers
            .send(job)
            .map_err(|_| StoreError::Unavailable("sqlite readers stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("sqlite readers stopped".into()))?
    }
}

fn writer_loop(conn: Connection, rx: Receiver<Box<dyn WriteJob>>) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for job in batch.drain(..) {
                job.finish(Err(StoreError::Unavailable(msg.clone().into())));
            }
            continue;
        }
        for job in batch.iter_mut() {
            let sp = conn.execute_batch("SAVEPOINT job");
            let ok = sp.is_ok() && job.run(&conn);
            let undo = if ok {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            if let Err(e) = conn.execute_batch(undo) {
                tracing::error!(error = %e, "sqlite savepoint handling failed");
            }
        }
        let commit = conn.execute_batch("COMMIT").map_err(StoreError::from);
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch.drain(..) {
            let outcome = match &commit {
                Ok(()) => Ok(()),
                // Each job gets the commit's error, of the same kind (a full
                // disk stays a full disk, not a generic database error).
                Err(StoreError::Full(m)) => {
                    Err(StoreError::Full(format!("commit failed: {m}").into()))
                }
                Err(StoreError::Unavailable(m)) => Err(StoreError::Unavailable(
                    format!("commit failed: {m}").into(),
                )),
                Err(e) => Err(StoreError::Database(format!("commit failed: {e}").into())),
            };
            job.finish(outcome);
        }
    }
}

fn reader_loop(conn: Connection, rx: Receiver<ReadJob>) {
    while let Ok(job) = rx.recv() {
        job(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[Migration] = &[Migration {
        version: 1,
        name: "t",
        sql: "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);",
    }];

    #[tokio::test]
    async fn failing_job_does_not_undo_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("t.db"), M, 2).unwrap();
        let mut handles = Vec::new();
        for i in 0..50 {
            let db = db.clone();
            handles.push(tokio::spawn(async move {
                db.write(move |c| {
                    // Every 10th job violates the primary key and must fail alone.
                    let k = if i % 10 == 0 {
                        "dup".to_string()
                    } else {
                        format!("k{i}")
                    };
                    c.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (k, i))?;
                    Ok(())
                })
                .await
            }));
        }
        let mut failures = 0;
        for h in handles {
            if h.await.unwrap().is_err() {
                failures += 1;
            }
        }
        // One of the five "dup" writes wins; four fail with a conflict.
        assert_eq!(failures, 4);
        let n: i64 = db
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(n, 46);
    }
}

//! A scope guard that never leaves a run `running` forever.

use std::ops::{Deref, DerefMut};

use crate::db::RunDb;
use crate::error::Result;
use crate::records::{LogLevel, LogLine, RunStatus};

/// Wraps a running [`RunDb`]. If it is dropped before [`RunGuard::complete`]
/// (an early return, a `?`, a panic), the run is marked `failed` with a
/// message saying so, instead of staying `running`.
pub struct RunGuard {
    db: Option<RunDb>,
}

impl RunGuard {
    pub fn new(db: RunDb) -> Self {
        RunGuard { db: Some(db) }
    }

    /// Completes the run and hands the database back.
    pub fn complete(
        mut self,
        status: RunStatus,
        duration_seconds: Option<f64>,
        error_message: Option<&str>,
    ) -> Result<RunDb> {
        let mut db = self
            .db
            .take()
            .ok_or(crate::error::RunDbError::NotInitialized)?;
        db.complete_run(status, duration_seconds, error_message, None)?;
        Ok(db)
    }
}

impl Deref for RunGuard {
    type Target = RunDb;
    fn deref(&self) -> &RunDb {
        // Only `complete` takes the database, and it consumes the guard.
        self.db
            .as_ref()
            .unwrap_or_else(|| unreachable!("RunGuard used after complete"))
    }
}

impl DerefMut for RunGuard {
    fn deref_mut(&mut self) -> &mut RunDb {
        self.db
            .as_mut()
            .unwrap_or_else(|| unreachable!("RunGuard used after complete"))
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let Some(db) = self.db.as_mut() else { return };
        if db.status() != Some(RunStatus::Running) {
            return;
        }
        let why = if std::thread::panicking() {
            "the run was abandoned by a panic before it completed"
        } else {
            "the run was abandoned before it completed"
        };
        let _ = db.log(&LogLine::new(LogLevel::Error, why));
        let _ = db.complete_run(RunStatus::Failed, None, Some(why), None);
    }
}

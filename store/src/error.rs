//! The one error type every backend returns.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached (connection refused, pool timeout).
    /// Callers map this to 503 and retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database's disk is full: writes fail until space is freed, reads
    /// go on. Callers map this to 507.
    #[error("the database's disk is full: {0}")]
    Full(String),
    /// A write would break a uniqueness rule (e.g. a username taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request names something that does not exist (a parent folder, a simulation).
    #[error("{0}")]
    NotFound(String),
    /// The request is wrong in a way only the store can tell (a file used as a folder).
    #[error("{0}")]
    Invalid(String),
    /// Anything else the database reported.
    #[error("database error: {0}")]
    Database(String),
    /// The schema on disk is newer than this binary understands.
    #[error("schema version {found} is newer than this binary supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    /// Stored data that cannot be decoded (corrupt JSON and the like).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// No randomness for a new id (fails closed).
    #[error(transparent)]
    Random(#[from] crate::random::RandomError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
            Some(ErrorCode::CannotOpen) | Some(ErrorCode::DatabaseBusy) => {
                StoreError::Unavailable(e.to_string())
            }
            Some(ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
                return StoreError::Conflict(db.message().to_string());
            }
            // A server going away says so as an error message before the
            // socket closes: connection exceptions (class 08) and shutdowns
            // (57P01 admin, 57P02 crash, 57P03 cannot connect now) are an
            // unavailable database, worth a retry, not a fault of the query.
            let code = db.code().code();
            // 53100 disk_full (and 53xxx insufficient resources of the disk kind).
            if code == "53100" {
                return StoreError::Full(db.message().to_string());
            }
            if code.starts_with("08") || code.starts_with("57P") {
                return StoreError::Unavailable(format!("{code}: {}", db.message()));
            }
            return StoreError::Database(format!("{}: {}", db.code().code(), db.message()));
        }
        if e.is_closed() {
            return StoreError::Unavailable(e.to_string());
        }
        // Connection-level failures carry no DbError; report the whole chain.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        StoreError::Unavailable(msg)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

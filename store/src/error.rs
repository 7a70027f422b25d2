//! The one error type every backend returns.

use thiserror::Error;

/// Why a database operation failed: the driver's own error when there is
/// one, kept whole so its source chain reaches the log; otherwise a
/// sentence (`"sqlite writer stopped".into()`). Shown with its whole
/// source chain, since drivers put the reason (refused, TLS) in a source.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// An error and its sources, joined by `: `.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        // Some drivers repeat their source in their own message.
        if !msg.ends_with(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        src = s.source();
    }
    msg
}

#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached (connection refused, pool timeout).
    /// Callers map this to 503 and retry later.
    #[error("database unavailable: {}", chain(.0.as_ref()))]
    Unavailable(Cause),
    /// The connection settings disagree with the server (TLS mode, an
    /// invalid URL): retrying cannot fix it, an operator must.
    #[error("database misconfigured: {0}")]
    Misconfigured(String),
    /// The database's disk is full: writes fail until space is freed, reads
    /// go on. Callers map this to 507.
    #[error("the database's disk is full: {}", chain(.0.as_ref()))]
    Full(Cause),
    /// A write would break a uniqueness rule (e.g. a username taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request names something that does not exist (a parent folder, a simulation).
    #[error("{0}")]
    NotFound(String),
    /// A write refers to a row that is not there (a foreign key failed).
    #[error("missing reference: {}", chain(.0.as_ref()))]
    MissingReference(Cause),
    /// The request is wrong in a way only the store can tell (a file used as a folder).
    #[error("{0}")]
    Invalid(String),
    /// Anything else the database reported.
    #[error("database error: {}", chain(.0.as_ref()))]
    Database(Cause),
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
        /// SQLITE_CONSTRAINT_FOREIGNKEY, the extended code of a failed foreign key.
        const FOREIGN_KEY: std::ffi::c_int = 787;
        let extended = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
            _ => None,
        };
        match e.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) if extended == Some(FOREIGN_KEY) => {
                StoreError::MissingReference(Box::new(e))
            }
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict(e.to_string()),
            Some(ErrorCode::CannotOpen) | Some(ErrorCode::DatabaseBusy) => {
                StoreError::Unavailable(Box::new(e))
            }
            Some(ErrorCode::DiskFull) => StoreError::Full(Box::new(e)),
            _ => StoreError::Database(Box::new(e)),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
                return StoreError::Conflict(db.message().to_string());
            }
            if db.code() == &tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION {
                return StoreError::MissingReference(Box::new(e));
            }
            // A server going away says so as an error message before the
            // socket closes: connection exceptions (class 08) and shutdowns
            // (57P01 admin, 57P02 crash, 57P03 cannot connect now) are an
            // unavailable database, worth a retry, not a fault of the query.
            let code = db.code().code();
            // 53100 disk_full (and 53xxx insufficient resources of the disk kind).
            if code == "53100" {
                return StoreError::Full(Box::new(e));
            }
            if code.starts_with("08") || code.starts_with("57P") {
                return StoreError::Unavailable(Box::new(e));
            }
            return StoreError::Database(Box::new(e));
        }
        // Connection-level failures carry no DbError; the source chain says why.
        StoreError::Unavailable(Box::new(e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(Box::new(other)),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

use thiserror::Error;

pub type Result<T, E = RunDbError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum RunDbError {
    #[error(
        "invalid execution id {0:?}: must match ^[A-Za-z0-9][A-Za-z0-9._-]{{0,127}}$ and not contain '..'"
    )]
    InvalidExecutionId(String),
    /// A value or request the caller got wrong; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// A value that does not fit its parameter's spec.
    #[error(transparent)]
    Param(#[from] crate::params::ParamError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("the run is already {0}; it accepts no more writes")]
    Completed(String),
    #[error("the run is already initialized")]
    AlreadyInitialized,
    #[error("the run has not been initialized")]
    NotInitialized,
    #[error(
        "run database schema version {found} is newer than this build understands ({supported})"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl RunDbError {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        RunDbError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// True when the caller sent something wrong (as opposed to a server fault).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            RunDbError::InvalidExecutionId(_)
                | RunDbError::Invalid(_)
                | RunDbError::Param(_)
                | RunDbError::NotFound(_)
                | RunDbError::Completed(_)
                | RunDbError::AlreadyInitialized
                | RunDbError::NotInitialized
        )
    }
}

//! simcache's persistence: one interface per concept (cache entries, sessions,
//! the catalog, results, files, SFM records, the run ledger and its leases),
//! each over SQLite or PostgreSQL, behind versioned migrations.

pub mod cache;
pub mod catalog;
pub mod clock;
mod error;
pub mod events;
pub mod files;
pub mod flight;
mod lease;
pub mod ledger;
pub mod migrate;
mod pg_tls;
pub mod postgres;
pub mod random;
pub mod results;
pub mod retry;
pub mod sessions;
pub mod sfm;
pub mod sql;
mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::{Result, StoreError};

use cache::CacheStore;
use sessions::SessionStore;

/// Where the store lives.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite { path: PathBuf },
    Postgres(postgres::PgOptions),
}

/// The opened store: every interface over one database.
#[derive(Clone)]
pub struct Stores {
    pub cache: Arc<dyn CacheStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub catalog: catalog::CatalogStore,
    pub results: results::ResultsStore,
    pub files: files::FileStore,
    /// Leases and expected ingests of runs in flight (the operator's).
    pub ledger: ledger::RunLedger,
    /// What the SFM proxies share.
    pub sfm: sfm::SfmStore,
    /// Portable SQL on the same database (health checks, benchmarks).
    pub sql: sql::Sql,
    /// Set for PostgreSQL: what a LISTEN connection needs.
    pub pg: Option<postgres::PgDb>,
}

impl Stores {
    /// Opens the database, applying migrations. `origin` names this process in
    /// the change events it publishes (PostgreSQL only).
    pub async fn open(backend: &Backend, origin: &str) -> Result<Stores> {
        match backend {
            Backend::Sqlite { path } => {
                let path = path.clone();
                let db = tokio::task::spawn_blocking(move || {
                    sqlite::SqliteDb::open(&path, migrate::SQLITE, 4)
                })
                .await
                .map_err(|e| StoreError::Unavailable(format!("open task failed: {e}").into()))??;
                let sql: sql::Sql = Arc::new(db.clone());
                Ok(Stores {
                    cache: Arc::new(cache::sqlite::SqliteCacheStore::new(db.clone())),
                    sessions: Arc::new(sessions::sqlite::SqliteSessionStore::new(db)),
                    catalog: catalog::CatalogStore::new(sql.clone()),
                    results: results::ResultsStore::new(sql.clone()),
                    files: files::FileStore::new(sql.clone()),
                    ledger: ledger::RunLedger::new(sql.clone()),
                    sfm: sfm::SfmStore::new(sql.clone(), origin),
                    sql,
                    pg: None,
                })
            }
            Backend::Postgres(opts) => {
                let db = postgres::PgDb::connect(opts, migrate::POSTGRES).await?;
                let sql: sql::Sql = Arc::new(db.clone());
                Ok(Stores {
                    cache: Arc::new(cache::postgres::PgCacheStore::new(db.clone(), origin)),
                    sessions: Arc::new(sessions::postgres::PgSessionStore::new(db.clone())),
                    catalog: catalog::CatalogStore::new(sql.clone()),
                    results: results::ResultsStore::new(sql.clone()),
                    files: files::FileStore::new(sql.clone()),
                    ledger: ledger::RunLedger::new(sql.clone()),
                    sfm: sfm::SfmStore::new(sql.clone(), origin),
                    sql,
                    pg: Some(db),
                })
            }
        }
    }
}

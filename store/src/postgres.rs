//! PostgreSQL access: a bounded deadpool pool, connected with retries so a
//! database that is still starting (or briefly gone) is waited for, not fatal.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use tokio_postgres::NoTls;

use crate::error::{Result, StoreError};
use crate::migrate::{self, Migration};

#[derive(Debug, Clone)]
pub struct PgOptions {
    pub url: String,
    pub pool_size: usize,
    /// How long a request waits for a free connection before failing with 503.
    pub wait_timeout: Duration,
    /// How long start-up keeps retrying an unreachable database.
    pub connect_deadline: Duration,
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            pool_size: 16,
            wait_timeout: Duration::from_secs(5),
            connect_deadline: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub struct PgDb {
    pool: Pool,
    config: tokio_postgres::Config,
}

impl PgDb {
    /// Connects (retrying with backoff until `connect_deadline`), then applies migrations.
    pub async fn connect(opts: &PgOptions, migrations: &[Migration]) -> Result<Self> {
        let config: tokio_postgres::Config = opts
            .url
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("invalid database URL: {e}")))?;
        let mgr = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.pool_size.max(1))
            .timeouts(Timeouts {
                wait: Some(opts.wait_timeout),
                create: Some(Duration::from_secs(5)),
                recycle: Some(Duration::from_secs(5)),
            })
            .runtime(deadpool_postgres::Runtime::Tokio1)
            // Our queries are short and latency-bound: JIT compiling one
            // whose estimate crosses jit_above_cost costs 20–200 ms (seen as
            // catalog-search outliers) and never pays back. A SET rather than
            // a startup option, so that poolers such as PgBouncer accept it.
            .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute("SET jit = off")
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let db = PgDb { pool, config };

        let start = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            match db.migrate(migrations).await {
                Ok(_) => return Ok(db),
                Err(StoreError::Unavailable(msg)) if start.elapsed() < opts.connect_deadline => {
                    tracing::warn!(error = %msg, retry_in_ms = backoff.as_millis() as u64,
                        "PostgreSQL not reachable yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn migrate(&self, migrations: &[Migration]) -> Result<usize> {
        let mut client = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        migrate::apply_postgres(client, migrations).await
    }

    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Connection settings, for opening a dedicated (non-pooled) connection such
    /// as a LISTEN channel.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

/// Connection settings of a PostgreSQL database.
pub type PgConfig = tokio_postgres::Config;

//! PostgreSQL access: a bounded deadpool pool, connected with retries so a
//! database that is still starting (or briefly gone) is waited for, not fatal.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};

use crate::error::{Result, StoreError};
use crate::migrate::{self, Migration};
pub use crate::pg_tls::PgConfig;

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
    config: PgConfig,
}

impl PgDb {
    /// Connects (retrying with backoff until `connect_deadline`, except
    /// where TLS settings and server disagree), then applies migrations.
    pub async fn connect(opts: &PgOptions, migrations: &[Migration]) -> Result<Self> {
        let config = PgConfig::parse(&opts.url)?;
        let mgr = Manager::from_config(
            config.config.clone(),
            config.connector(),
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
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        let db = PgDb { pool, config };

        let start = tokio::time::Instant::now();
        let mut delays = crate::retry::delays(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let err = match db.migrate(migrations).await {
                Ok(_) => return Ok(db),
                Err(StoreError::Unavailable(why)) => {
                    db.config.explain(&crate::error::chain(why.as_ref()))
                }
                // pg_hba's refusal of a plain connection is a database error.
                Err(StoreError::Database(why)) => {
                    match db.config.explain(&crate::error::chain(why.as_ref())) {
                        e @ StoreError::Misconfigured(_) => e,
                        _ => return Err(StoreError::Database(why)),
                    }
                }
                Err(e) => return Err(e),
            };
            let left = opts.connect_deadline.saturating_sub(start.elapsed());
            if matches!(err, StoreError::Misconfigured(_)) || left.is_zero() {
                return Err(err);
            }
            // The last try falls on the deadline.
            let wait = delays.next().unwrap_or(Duration::from_secs(5)).min(left);
            tracing::warn!(error = %err, retry_in_ms = wait.as_millis() as u64,
                "PostgreSQL not reachable yet");
            tokio::time::sleep(wait).await;
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

    /// Connection settings, TLS included, for opening a dedicated
    /// (non-pooled) connection such as a LISTEN channel.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }
}

//! Versioned, forward-only schema migrations, safe when several processes start
//! at once: SQLite serialises them with `BEGIN IMMEDIATE`, PostgreSQL with a
//! transaction-scoped advisory lock.

use rusqlite::Connection;

use crate::error::{Result, StoreError};

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The store's schema for SQLite, oldest first.
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "sessions_and_cache",
        sql: include_str!("../migrations/sqlite/0001_sessions_and_cache.sql"),
    },
    Migration {
        version: 2,
        name: "catalog_results_files",
        sql: include_str!("../migrations/sqlite/0002_catalog_results_files.sql"),
    },
    Migration {
        version: 3,
        name: "run_ledger",
        sql: include_str!("../migrations/sqlite/0003_run_ledger.sql"),
    },
    Migration {
        version: 4,
        name: "catalog_generation",
        sql: include_str!("../migrations/sqlite/0004_catalog_generation.sql"),
    },
    Migration {
        version: 5,
        name: "sfm",
        sql: include_str!("../migrations/sqlite/0005_sfm.sql"),
    },
];

/// The store's schema for PostgreSQL, oldest first.
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "sessions_and_cache",
        sql: include_str!("../migrations/postgres/0001_sessions_and_cache.sql"),
    },
    Migration {
        version: 2,
        name: "catalog_results_files",
        sql: include_str!("../migrations/postgres/0002_catalog_results_files.sql"),
    },
    Migration {
        version: 3,
        name: "run_ledger",
        sql: include_str!("../migrations/postgres/0003_run_ledger.sql"),
    },
    Migration {
        version: 4,
        name: "catalog_generation",
        sql: include_str!("../migrations/postgres/0004_catalog_generation.sql"),
    },
    Migration {
        version: 5,
        name: "sfm",
        sql: include_str!("../migrations/postgres/0005_sfm.sql"),
    },
];

/// Arbitrary constant naming our advisory lock ("SIMC").
const PG_LOCK_KEY: i64 = 0x5349_4d43;

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL)";

fn latest(migrations: &[Migration]) -> i64 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Applies every migration newer than the database's version. Returns how many ran.
pub fn apply_sqlite(conn: &mut Connection, migrations: &[Migration]) -> Result<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(LEDGER)?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    if current > latest(migrations) {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: latest(migrations),
        });
    }
    let mut ran = 0;
    for m in migrations.iter().filter(|m| m.version > current) {
        tx.execute_batch(m.sql).map_err(|e| {
            StoreError::Database(format!("migration {} ({}) failed: {e}", m.version, m.name).into())
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            (m.version, m.name, crate::clock::now_ms()),
        )?;
        ran += 1;
    }
    tx.commit()?;
    Ok(ran)
}

/// PostgreSQL twin of [`apply_sqlite`].
pub async fn apply_postgres(
    client: &mut tokio_postgres::Client,
    migrations: &[Migration],
) -> Result<usize> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_LOCK_KEY])
        .await?;
    tx.batch_execute(LEDGER).await?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if current > latest(migrations) {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: latest(migrations),
        });
    }
    let mut ran = 0;
    for m in migrations.iter().filter(|m| m.version > current) {
        tx.batch_execute(m.sql).await.map_err(|e| {
            StoreError::Database(format!("migration {} ({}) failed: {e}", m.version, m.name).into())
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &crate::clock::now_ms()],
        )
        .await?;
        ran += 1;
    }
    tx.commit().await?;
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_schema_applies_once_and_is_idempotent() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(apply_sqlite(&mut c, SQLITE).unwrap(), SQLITE.len());
        assert_eq!(apply_sqlite(&mut c, SQLITE).unwrap(), 0);
        let n: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'cache_entries'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut c = Connection::open_in_memory().unwrap();
        apply_sqlite(&mut c, SQLITE).unwrap();
        c.execute(
            "INSERT INTO schema_migrations VALUES (999, 'future', 0)",
            [],
        )
        .unwrap();
        let err = apply_sqlite(&mut c, SQLITE).unwrap_err();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
            "{err}"
        );
    }
}

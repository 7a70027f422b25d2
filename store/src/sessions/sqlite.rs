//! Users and sessions in SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::*;
use crate::sqlite::SqliteDb;

pub struct SqliteSessionStore {
    db: SqliteDb,
}

impl SqliteSessionStore {
    pub fn new(db: SqliteDb) -> Self {
        SqliteSessionStore { db }
    }
}

#[async_trait]
impl SessionStore for SqliteSessionStore {
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
        email: Option<&str>,
    ) -> Result<i64> {
        let (u, h, r, e) = (
            username.to_string(),
            password_hash.to_string(),
            role.to_string(),
            email.map(str::to_string),
        );
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO users (username, password_hash, role, email, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![u, h, r, e, crate::clock::now_ms()],
                )?;
                Ok(c.last_insert_rowid())
            })
            .await
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>> {
        let u = username.to_string();
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT id, username, password_hash, role, email, is_active, created_at_ms
                     FROM users WHERE username = ?1",
                )?
                .query_row([u], |r| {
                    Ok(UserRecord {
                        id: r.get(0)?,
                        username: r.get(1)?,
                        password_hash: r.get(2)?,
                        role: r.get(3)?,
                        email: r.get(4)?,
                        is_active: r.get(5)?,
                        created_at_ms: r.get(6)?,
                    })
                })
                .optional()?)
            })
            .await
    }

    async fn count_users(&self, role: Option<&str>) -> Result<i64> {
        let role = role.map(str::to_string);
        self.db
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM users WHERE ?1 IS NULL OR role = ?1",
                    [role],
                    |r| r.get(0),
                )?)
            })
            .await
    }

    async fn insert_session(&self, s: &SessionRecord) -> Result<()> {
        let s = s.clone();
        self.db
            .write(move |c| {
                c.prepare_cached(
                    "INSERT INTO sessions (token_hash, user_id, username, role, privileges,
                        created_at_ms, expires_at_ms, metadata)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    s.token_hash,
                    s.user_id,
                    s.username,
                    s.role,
                    privileges_to_text(&s.privileges),
                    s.created_at_ms,
                    s.expires_at_ms,
                    s.metadata.as_ref().map(|m| m.to_string()),
                ])?;
                Ok(())
            })
            .await
    }

    async fn find_session(&self, token_hash: &str) -> Result<Option<SessionRecord>> {
        let t = token_hash.to_string();
        let row = self
            .db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT token_hash, user_id, username, role, privileges, created_at_ms,
                            expires_at_ms, metadata
                     FROM sessions WHERE token_hash = ?1",
                )?
                .query_row([t], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                })
                .optional()?)
            })
            .await?;
        let Some((token_hash, user_id, username, role, privs, created, expires, meta)) = row else {
            return Ok(None);
        };
        Ok(Some(SessionRecord {
            token_hash,
            user_id,
            username,
            role,
            privileges: privileges_from_text(&privs)?,
            created_at_ms: created,
            expires_at_ms: expires,
            metadata: meta.map(|m| serde_json::from_str(&m)).transpose()?,
        }))
    }

    async fn extend_session(
        &self,
        token_hash: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let t = token_hash.to_string();
        self.db
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE sessions SET expires_at_ms = ?2 WHERE token_hash = ?1 AND expires_at_ms > ?3",
                    params![t, expires_at_ms, now_ms],
                )? > 0)
            })
            .await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let t = token_hash.to_string();
        self.db
            .write(move |c| Ok(c.execute("DELETE FROM sessions WHERE token_hash = ?1", [t])? > 0))
            .await
    }

    async fn delete_sessions_of(&self, username: &str) -> Result<u64> {
        let u = username.to_string();
        self.db
            .write(move |c| Ok(c.execute("DELETE FROM sessions WHERE username = ?1", [u])? as u64))
            .await
    }

    async fn purge_expired_sessions(&self, now_ms: i64) -> Result<u64> {
        self.db
            .write(move |c| {
                Ok(c.execute("DELETE FROM sessions WHERE expires_at_ms <= ?1", [now_ms])? as u64)
            })
            .await
    }
}

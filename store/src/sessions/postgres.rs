//! Users and sessions in PostgreSQL.

use async_trait::async_trait;

use super::*;
use crate::postgres::PgDb;

pub struct PgSessionStore {
    db: PgDb,
}

impl PgSessionStore {
    pub fn new(db: PgDb) -> Self {
        PgSessionStore { db }
    }
}

#[async_trait]
impl SessionStore for PgSessionStore {
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
        email: Option<&str>,
    ) -> Result<i64> {
        let c = self.db.client().await?;
        Ok(c.query_one(
            "INSERT INTO users (username, password_hash, role, email, created_at_ms)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &username,
                &password_hash,
                &role,
                &email,
                &crate::clock::now_ms(),
            ],
        )
        .await?
        .get(0))
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>> {
        let c = self.db.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT id, username, password_hash, role, email, is_active, created_at_ms
                 FROM users WHERE username = $1",
            )
            .await?;
        Ok(c.query_opt(&stmt, &[&username]).await?.map(|r| UserRecord {
            id: r.get(0),
            username: r.get(1),
            password_hash: r.get(2),
            role: r.get(3),
            email: r.get(4),
            is_active: r.get(5),
            created_at_ms: r.get(6),
        }))
    }

    async fn count_users(&self, role: Option<&str>) -> Result<i64> {
        let c = self.db.client().await?;
        Ok(c.query_one(
            "SELECT COUNT(*)::BIGINT FROM users WHERE $1::TEXT IS NULL OR role = $1",
            &[&role],
        )
        .await?
        .get(0))
    }

    async fn insert_session(&self, s: &SessionRecord) -> Result<()> {
        let c = self.db.client().await?;
        let meta = s.metadata.as_ref().map(|m| m.to_string());
        c.execute(
            "INSERT INTO sessions (token_hash, user_id, username, role, privileges, created_at_ms,
                expires_at_ms, metadata)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &s.token_hash,
                &s.user_id,
                &s.username,
                &s.role,
                &privileges_to_text(&s.privileges),
                &s.created_at_ms,
                &s.expires_at_ms,
                &meta,
            ],
        )
        .await?;
        Ok(())
    }

    async fn find_session(&self, token_hash: &str) -> Result<Option<SessionRecord>> {
        let c = self.db.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT token_hash, user_id, username, role, privileges, created_at_ms,
                        expires_at_ms, metadata
                 FROM sessions WHERE token_hash = $1",
            )
            .await?;
        let Some(r) = c.query_opt(&stmt, &[&token_hash]).await? else {
            return Ok(None);
        };
        let meta: Option<String> = r.get(7);
        Ok(Some(SessionRecord {
            token_hash: r.get(0),
            user_id: r.get(1),
            username: r.get(2),
            role: r.get(3),
            privileges: privileges_from_text(r.get(4))?,
            created_at_ms: r.get(5),
            expires_at_ms: r.get(6),
            metadata: meta.map(|m| serde_json::from_str(&m)).transpose()?,
        }))
    }

    async fn extend_session(
        &self,
        token_hash: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool> {
        let c = self.db.client().await?;
        Ok(c.execute(
            "UPDATE sessions SET expires_at_ms = $2 WHERE token_hash = $1 AND expires_at_ms > $3",
            &[&token_hash, &expires_at_ms, &now_ms],
        )
        .await?
            > 0)
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let c = self.db.client().await?;
        Ok(
            c.execute("DELETE FROM sessions WHERE token_hash = $1", &[&token_hash])
                .await?
                > 0,
        )
    }

    async fn delete_sessions_of(&self, username: &str) -> Result<u64> {
        let c = self.db.client().await?;
        Ok(
            c.execute("DELETE FROM sessions WHERE username = $1", &[&username])
                .await?,
        )
    }

    async fn purge_expired_sessions(&self, now_ms: i64) -> Result<u64> {
        let c = self.db.client().await?;
        Ok(
            c.execute("DELETE FROM sessions WHERE expires_at_ms <= $1", &[&now_ms])
                .await?,
        )
    }
}

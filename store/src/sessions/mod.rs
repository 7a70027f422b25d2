//! Users and sessions as stored. The rules (roles, privileges, hashing) live in
//! `simcache-auth`; this module only keeps the records.

pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;

use crate::error::Result;

#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub email: Option<String>,
    pub is_active: bool,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// SHA-256 (hex) of the session token; the token itself is never stored.
    pub token_hash: String,
    pub user_id: Option<i64>,
    pub username: String,
    pub role: Option<String>,
    pub privileges: Vec<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub metadata: Option<serde_json::Value>,
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Creates a user; `StoreError::Conflict` when the name is taken.
    async fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
        email: Option<&str>,
    ) -> Result<i64>;
    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>>;
    async fn count_users(&self, role: Option<&str>) -> Result<i64>;
    async fn insert_session(&self, s: &SessionRecord) -> Result<()>;
    async fn find_session(&self, token_hash: &str) -> Result<Option<SessionRecord>>;
    /// Moves the expiry of a session that has not expired at `now_ms`.
    async fn extend_session(
        &self,
        token_hash: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool>;
    async fn delete_session(&self, token_hash: &str) -> Result<bool>;
    /// Ends every session of `username` (a run's, when the run ends);
    /// returns how many.
    async fn delete_sessions_of(&self, username: &str) -> Result<u64>;
    async fn purge_expired_sessions(&self, now_ms: i64) -> Result<u64>;
}

fn privileges_to_text(p: &[String]) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| "[]".into())
}

fn privileges_from_text(t: &str) -> Result<Vec<String>> {
    Ok(serde_json::from_str(t)?)
}

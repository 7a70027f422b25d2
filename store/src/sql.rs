//! One way to run SQL on either backend, for the stores whose queries are the
//! same in both dialects (catalog, results, files). Queries are written with
//! PostgreSQL's `$1` placeholders; SQLite gets them as `?1`. Values travel as
//! [`SqlValue`], rows come back as [`DbRow`].

use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::error::{Result, StoreError};
use crate::postgres::PgDb;
use crate::sqlite::SqliteDb;

/// A value bound to a query or read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    I64(i64),
    F64(f64),
    Bool(bool),
    Text(String),
    /// Raw bytes (BLOB / BYTEA): response bodies stored verbatim.
    Bytes(bytes::Bytes),
}

impl From<bytes::Bytes> for SqlValue {
    fn from(v: bytes::Bytes) -> Self {
        SqlValue::Bytes(v)
    }
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::I64(v)
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::F64(v)
    }
}
impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Bool(v)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}
impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(v: Option<T>) -> Self {
        v.map(Into::into).unwrap_or(SqlValue::Null)
    }
}

/// A parameter of a statement in a [`Script`]: a value, or a column of the
/// first row an earlier statement of the same script returned (for ids
/// handed out by `RETURNING`).
#[derive(Debug, Clone)]
pub enum Param {
    Value(SqlValue),
    Returned { stmt: usize, col: usize },
}

impl<T: Into<SqlValue>> From<T> for Param {
    fn from(v: T) -> Self {
        Param::Value(v.into())
    }
}

/// One statement of a script.
#[derive(Debug, Clone)]
pub struct Stmt {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Stmt {
    pub fn new(sql: impl Into<String>, params: Vec<Param>) -> Self {
        Stmt {
            sql: sql.into(),
            params,
        }
    }
}

/// Statements run in order in one transaction: all or nothing.
pub type Script = Vec<Stmt>;

/// A row: its values in select order.
#[derive(Debug, Clone, PartialEq)]
pub struct DbRow(pub Vec<SqlValue>);

impl DbRow {
    fn at(&self, i: usize) -> &SqlValue {
        self.0.get(i).unwrap_or(&SqlValue::Null)
    }

    pub fn i64(&self, i: usize) -> Option<i64> {
        match self.at(i) {
            SqlValue::I64(v) => Some(*v),
            SqlValue::F64(v) => Some(*v as i64),
            SqlValue::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    pub fn f64(&self, i: usize) -> Option<f64> {
        match self.at(i) {
            SqlValue::F64(v) => Some(*v),
            SqlValue::I64(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn bool(&self, i: usize) -> Option<bool> {
        match self.at(i) {
            SqlValue::Bool(b) => Some(*b),
            SqlValue::I64(v) => Some(*v != 0),
            _ => None,
        }
    }

    pub fn text(&self, i: usize) -> Option<String> {
        match self.at(i) {
            SqlValue::Text(s) => Some(s.clone()),
            SqlValue::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// Raw bytes (cheap to clone: shares the buffer).
    pub fn bytes(&self, i: usize) -> Option<bytes::Bytes> {
        match self.at(i) {
            SqlValue::Bytes(b) => Some(b.clone()),
            SqlValue::Text(s) => Some(bytes::Bytes::copy_from_slice(s.as_bytes())),
            _ => None,
        }
    }

    /// A JSON document stored as text (`None` when NULL or unreadable).
    pub fn json(&self, i: usize) -> Option<serde_json::Value> {
        self.text(i).and_then(|s| serde_json::from_str(&s).ok())
    }
}

/// Which SQL dialect a connection speaks (for the few queries that differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Runs portable SQL on one database.
#[async_trait]
pub trait SqlExec: Send + Sync {
    fn dialect(&self) -> Dialect;
    async fn query(&self, sql: &str, params: Vec<SqlValue>) -> Result<Vec<DbRow>>;
    /// Runs the statements in one transaction; returns each one's rows.
    async fn script(&self, script: Script) -> Result<Vec<Vec<DbRow>>>;
    /// Health check.
    async fn ping(&self) -> Result<()> {
        self.query("SELECT 1", vec![]).await.map(|_| ())
    }
}

pub type Sql = Arc<dyn SqlExec>;

fn resolve(params: &[Param], done: &[Vec<DbRow>]) -> Result<Vec<SqlValue>> {
    params
        .iter()
        .map(|p| match p {
            Param::Value(v) => Ok(v.clone()),
            Param::Returned { stmt, col } => done
                .get(*stmt)
                .and_then(|rows| rows.first())
                .map(|r| r.at(*col).clone())
                .ok_or_else(|| {
                    StoreError::Database(
                        format!("statement {stmt} of the script returned no row").into(),
                    )
                }),
        })
        .collect()
}

// ------------------------------------------------------------------ SQLite

/// `$12` → `?12` (our SQL has no `$` inside string literals).
pub(crate) fn sqlite_placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_params(v: &[SqlValue]) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    v.iter()
        .map(|x| match x {
            SqlValue::Null => V::Null,
            SqlValue::I64(i) => V::Integer(*i),
            SqlValue::F64(f) => V::Real(*f),
            SqlValue::Bool(b) => V::Integer(i64::from(*b)),
            SqlValue::Text(s) => V::Text(s.clone()),
            SqlValue::Bytes(b) => V::Blob(b.to_vec()),
        })
        .collect()
}

fn sqlite_run(c: &rusqlite::Connection, sql: &str, params: &[SqlValue]) -> Result<Vec<DbRow>> {
    let mut stmt = c.prepare_cached(&sqlite_placeholders(sql))?;
    let n = stmt.column_count();
    let p = sqlite_params(params);
    let mut rows = stmt.query(rusqlite::params_from_iter(p.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut vals = Vec::with_capacity(n);
        for i in 0..n {
            use rusqlite::types::ValueRef as R;
            vals.push(match r.get_ref(i)? {
                R::Null => SqlValue::Null,
                R::Integer(i) => SqlValue::I64(i),
                R::Real(f) => SqlValue::F64(f),
                R::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
                R::Blob(b) => SqlValue::Bytes(bytes::Bytes::copy_from_slice(b)),
            });
        }
        out.push(DbRow(vals));
    }
    Ok(out)
}

#[async_trait]
impl SqlExec for SqliteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn query(&self, sql: &str, params: Vec<SqlValue>) -> Result<Vec<DbRow>> {
        let sql = sql.to_string();
        self.read(move |c| sqlite_run(c, &sql, &params)).await
    }

    async fn script(&self, script: Script) -> Result<Vec<Vec<DbRow>>> {
        self.write(move |c| {
            let mut done: Vec<Vec<DbRow>> = Vec::with_capacity(script.len());
            for s in &script {
                let params = resolve(&s.params, &done)?;
                done.push(sqlite_run(c, &s.sql, &params)?);
            }
            Ok(done)
        })
        .await
    }
}

// -------------------------------------------------------------- PostgreSQL

impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::I64(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            SqlValue::F64(v) => match *ty {
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => v.to_string().to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            SqlValue::Bool(b) => b.to_sql(ty, out),
            SqlValue::Text(s) => s.to_sql(ty, out),
            SqlValue::Bytes(b) => b.as_ref().to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn pg_row(r: &tokio_postgres::Row) -> Result<DbRow> {
    let mut vals = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let t = col.type_();
        let v = match *t {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(SqlValue::I64),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| SqlValue::I64(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| SqlValue::I64(v.into())),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(SqlValue::F64),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)?
                .map(|v| SqlValue::F64(v.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(SqlValue::Bool),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                r.try_get::<_, Option<String>>(i)?.map(SqlValue::Text)
            }
            Type::BYTEA => r
                .try_get::<_, Option<Vec<u8>>>(i)?
                .map(|v| SqlValue::Bytes(v.into())),
            _ => {
                return Err(StoreError::Database(
                    format!(
                        "column {} has type {t}, which the portable layer does not read",
                        col.name()
                    )
                    .into(),
                ));
            }
        };
        vals.push(v.unwrap_or(SqlValue::Null));
    }
    Ok(DbRow(vals))
}

fn pg_refs(v: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    v.iter().map(|x| x as &(dyn ToSql + Sync)).collect()
}

#[async_trait]
impl SqlExec for PgDb {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn query(&self, sql: &str, params: Vec<SqlValue>) -> Result<Vec<DbRow>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        let rows = client.query(&stmt, &pg_refs(&params)).await?;
        rows.iter().map(pg_row).collect()
    }

    async fn script(&self, script: Script) -> Result<Vec<Vec<DbRow>>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut done: Vec<Vec<DbRow>> = Vec::with_capacity(script.len());
        for s in &script {
            let params = resolve(&s.params, &done)?;
            let stmt = tx.prepare_cached(&s.sql).await?;
            let rows = tx.query(&stmt, &pg_refs(&params)).await?;
            done.push(rows.iter().map(pg_row).collect::<Result<_>>()?);
        }
        tx.commit().await?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_sqlite_numbered_parameters() {
        assert_eq!(
            sqlite_placeholders("SELECT a FROM t WHERE b = $1 AND c > $12"),
            "SELECT a FROM t WHERE b = ?1 AND c > ?12"
        );
    }

    #[test]
    fn rows_convert_between_numeric_kinds() {
        let r = DbRow(vec![
            SqlValue::I64(3),
            SqlValue::F64(2.5),
            SqlValue::Null,
            SqlValue::Text("{\"a\":1}".into()),
        ]);
        assert_eq!(r.f64(0), Some(3.0));
        assert_eq!(r.i64(1), Some(2));
        assert_eq!(r.bool(0), Some(true));
        assert_eq!(r.text(2), None);
        assert_eq!(r.json(3), Some(serde_json::json!({"a": 1})));
        assert_eq!(r.i64(9), None);
    }
}

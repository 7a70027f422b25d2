//! The `POST /cache` body and the rules that turn it into an entry. Pure.

use serde::Deserialize;
use serde_json::Value;
use simcache_store::cache::{CacheEntry, EntryStatus};

use super::key;

/// Longest TTL accepted: 100 years.
pub const MAX_TTL_SECONDS: i64 = 100 * 366 * 24 * 3600;
const MAX_FIELD_LEN: usize = 1024;
const MAX_PATH_LEN: usize = 4096;

/// Field names and types as sim2l's `CacheClient` sends them; `ttl_hours` (the
/// seed) and `ttl_seconds` (sim2l's client) are both accepted.
#[derive(Debug, Deserialize)]
pub struct PutRequest {
    pub cache_key: String,
    pub simulation_id: i64,
    pub simulation_name: String,
    pub simulation_version: String,
    pub execution_id: String,
    pub squid_id: String,
    pub input_hash: String,
    pub run_db_path: Option<String>,
    #[serde(default)]
    pub ttl_hours: Option<f64>,
    #[serde(default)]
    pub ttl_seconds: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

fn bad(m: impl Into<String>) -> InvalidRequest {
    InvalidRequest(m.into())
}

/// The TTL in seconds, None for "never expires".
fn ttl_seconds(req: &PutRequest) -> Result<Option<i64>, InvalidRequest> {
    let secs = match &req.ttl_seconds {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<f64>()
                .map_err(|_| bad(format!("ttl_seconds {s:?} is not a number")))?,
        ),
        Some(Value::Number(n)) => n.as_f64(),
        Some(other) => return Err(bad(format!("ttl_seconds must be a number, got {other}"))),
    };
    let secs = match (secs, req.ttl_hours) {
        (Some(s), _) => Some(s),
        (None, Some(h)) => Some(h * 3600.0),
        (None, None) => None,
    };
    match secs {
        None => Ok(None),
        Some(s) if !s.is_finite() || s < 0.0 => Err(bad("TTL must not be negative")),
        Some(s) if s > MAX_TTL_SECONDS as f64 => Err(bad(format!(
            "TTL is longer than the maximum of {MAX_TTL_SECONDS} seconds"
        ))),
        Some(s) => Ok(Some(s.round() as i64)),
    }
}

fn check_text(name: &str, v: &str, max: usize) -> Result<(), InvalidRequest> {
    if v.is_empty() {
        return Err(bad(format!("{name} must not be empty")));
    }
    if v.len() > max {
        return Err(bad(format!("{name} is longer than {max} bytes")));
    }
    if v.chars().any(char::is_control) {
        return Err(bad(format!("{name} contains a control character")));
    }
    Ok(())
}

/// Whether any string or key in `v` contains U+0000. (The parser's depth
/// limit bounds the recursion.)
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

impl PutRequest {
    /// Validates the request and builds the entry to store at `now_ms`.
    pub fn into_entry(
        self,
        now_ms: i64,
        user_id: Option<i64>,
    ) -> Result<CacheEntry, InvalidRequest> {
        let ttl = ttl_seconds(&self)?;
        let metadata = match self.metadata {
            None | Some(Value::Null) => None,
            Some(m) => Some(m),
        };
        checked(CacheEntry {
            cache_key: self.cache_key,
            simulation_id: self.simulation_id,
            simulation_name: self.simulation_name,
            simulation_version: self.simulation_version,
            execution_id: self.execution_id,
            squid_id: self.squid_id,
            input_hash: self.input_hash,
            run_db_path: self.run_db_path,
            metadata,
            user_id,
            created_at_ms: now_ms,
            expires_at_ms: ttl.map(|s| now_ms.saturating_add(s * 1000)),
            last_accessed_ms: now_ms,
            access_count: 0,
            hit_count: 0,
            size_bytes: 0,
            status: EntryStatus::Valid,
        })
    }
}

/// The checks every stored entry passes wherever it was written (a pod's
/// write reaches the shared tier as an entry, and is checked again there),
/// with the size it is accounted as.
pub fn checked(mut e: CacheEntry) -> Result<CacheEntry, InvalidRequest> {
    key::validate(&e.cache_key).map_err(|err| bad(err.to_string()))?;
    if e.simulation_id < 0 {
        return Err(bad("simulation_id must not be negative"));
    }
    for (name, v) in [
        ("simulation_name", &e.simulation_name),
        ("simulation_version", &e.simulation_version),
        ("execution_id", &e.execution_id),
        ("squid_id", &e.squid_id),
        ("input_hash", &e.input_hash),
    ] {
        check_text(name, v, MAX_FIELD_LEN)?;
    }
    if let Some(p) = &e.run_db_path {
        check_text("run_db_path", p, MAX_PATH_LEN)?;
    }
    match &e.metadata {
        None | Some(Value::Object(_)) => {}
        Some(_) => return Err(bad("metadata must be a JSON object")),
    }
    if e.metadata.as_ref().is_some_and(has_nul) {
        // PostgreSQL's jsonb cannot hold one; refused on every backend alike.
        return Err(bad(
            "metadata contains a NUL character (\\u0000), which cannot be stored",
        ));
    }
    let size = e.cache_key.len()
        + e.simulation_name.len()
        + e.simulation_version.len()
        + e.execution_id.len()
        + e.squid_id.len()
        + e.input_hash.len()
        + e.run_db_path.as_ref().map_or(0, String::len)
        + e.metadata.as_ref().map_or(0, |m| m.to_string().len());
    e.size_bytes = size as i64;
    Ok(e)
}

/// A pod's entry as the shared tier stores it: written now, by the pod's
/// session, with fresh counters; only its lifetime is kept from the pod.
pub fn as_written_at_the_tier(
    mut e: CacheEntry,
    now_ms: i64,
    user_id: Option<i64>,
) -> Result<CacheEntry, InvalidRequest> {
    let lifetime = e
        .expires_at_ms
        .map(|x| x.saturating_sub(e.created_at_ms).max(0));
    e.user_id = user_id;
    e.created_at_ms = now_ms;
    e.expires_at_ms = lifetime.map(|l| now_ms.saturating_add(l));
    e.last_accessed_ms = now_ms;
    e.access_count = 0;
    e.hit_count = 0;
    e.status = EntryStatus::Valid;
    checked(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: Value) -> PutRequest {
        let mut base = serde_json::json!({
            "cache_key": "thermal_sim/350K", "simulation_id": 42, "simulation_name": "thermal_sim",
            "simulation_version": "1.0.0", "execution_id": "exec-001",
            "squid_id": "thermal_sim/1.0.0/xyz", "input_hash": "hash123", "run_db_path": "/r.db"
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn ttl_hours_and_ttl_seconds_both_work() {
        let e = req(serde_json::json!({"ttl_hours": 24}))
            .into_entry(1000, None)
            .unwrap();
        assert_eq!(e.expires_at_ms, Some(1000 + 24 * 3600 * 1000));
        let e = req(serde_json::json!({"ttl_seconds": "60"}))
            .into_entry(1000, None)
            .unwrap();
        assert_eq!(e.expires_at_ms, Some(61_000));
        let e = req(serde_json::json!({"ttl_seconds": null, "ttl_hours": null}))
            .into_entry(0, None)
            .unwrap();
        assert_eq!(e.expires_at_ms, None);
        let e = req(serde_json::json!({"ttl_seconds": ""}))
            .into_entry(0, None)
            .unwrap();
        assert_eq!(e.expires_at_ms, None);
    }

    #[test]
    fn bad_fields_are_named() {
        let msg = |v| req(v).into_entry(0, None).unwrap_err().0;
        assert!(msg(serde_json::json!({"ttl_hours": -1})).contains("negative"));
        assert!(msg(serde_json::json!({"ttl_seconds": "soon"})).contains("ttl_seconds"));
        assert!(msg(serde_json::json!({"ttl_hours": 1e12})).contains("maximum"));
        assert!(msg(serde_json::json!({"cache_key": ""})).contains("cache_key"));
        assert!(msg(serde_json::json!({"cache_key": "a/../b"})).contains("cache_key"));
        assert!(msg(serde_json::json!({"metadata": [1]})).contains("metadata"));
        assert!(msg(serde_json::json!({"execution_id": ""})).contains("execution_id"));
        assert!(msg(serde_json::json!({"simulation_id": -3})).contains("simulation_id"));
    }
}

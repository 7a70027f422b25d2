//! A cache entry as the seed's cache service sends it (`GET /cache/{key}`),
//! prepared once per entry: the JSON around `hit_count` is kept as bytes and
//! only the count is written per hit. Serializing the entry on every hit was
//! the largest single cost of a memory-tier GET after the kernel's.

use serde_json::Value;
use simcache_store::cache::CacheEntry;
use simcache_store::clock::format_ms;

/// The seed's full entry, field for field.
#[derive(serde::Serialize)]
struct EntryView<'a> {
    cache_key: &'a str,
    simulation_id: i64,
    simulation_name: &'a str,
    simulation_version: &'a str,
    execution_id: &'a str,
    squid_id: &'a str,
    input_hash: &'a str,
    run_db_path: Option<&'a str>,
    created_at: &'a str,
    expires_at: Option<&'a str>,
    ttl_hours: Option<f64>,
    hit_count: i64,
    metadata: Option<&'a Value>,
}

/// The JSON of an entry in two halves, before and after its hit count.
#[derive(Debug, Clone)]
pub struct EntryBody {
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// Written in place of the count and then cut out. `hit_count` comes before
/// `metadata`, and in a JSON string every quote is escaped, so the first
/// `"hit_count":` is the field itself.
const COUNT_MARK: &str = "\"hit_count\":0";

impl EntryBody {
    pub fn new(e: &CacheEntry) -> Result<Self, serde_json::Error> {
        let created_at = format_ms(e.created_at_ms);
        let expires_at = e.expires_at_ms.map(format_ms);
        let view = EntryView {
            cache_key: &e.cache_key,
            simulation_id: e.simulation_id,
            simulation_name: &e.simulation_name,
            simulation_version: &e.simulation_version,
            execution_id: &e.execution_id,
            squid_id: &e.squid_id,
            input_hash: &e.input_hash,
            run_db_path: e.run_db_path.as_deref(),
            created_at: &created_at,
            expires_at: expires_at.as_deref(),
            ttl_hours: e
                .expires_at_ms
                .map(|x| (x - e.created_at_ms) as f64 / 3_600_000.0),
            hit_count: 0,
            metadata: e.metadata.as_ref(),
        };
        let json = serde_json::to_vec(&view)?;
        let at = memchr::memmem::find(&json, COUNT_MARK.as_bytes())
            .map(|i| i + COUNT_MARK.len() - 1)
            .ok_or_else(|| serde::ser::Error::custom("hit_count missing from the entry JSON"))?;
        Ok(EntryBody {
            head: json[..at].to_vec(),
            tail: json[at + 1..].to_vec(),
        })
    }

    /// The entry's JSON with this hit count.
    pub fn with_hit_count(&self, hit_count: i64) -> Vec<u8> {
        let mut n = itoa::Buffer::new();
        let n = n.format(hit_count);
        let mut out = Vec::with_capacity(self.head.len() + n.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&self.tail);
        out
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The bytes it holds on the heap (its two buffers, with allocator overhead).
    pub fn heap_bytes(&self) -> usize {
        [self.head.capacity(), self.tail.capacity()]
            .iter()
            .filter(|c| **c > 0)
            .map(|c| (c + 16).next_multiple_of(16))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(metadata: Option<Value>, expires: Option<i64>) -> CacheEntry {
        CacheEntry {
            cache_key: "thermal/350K/\"quoted\" \\ \"hit_count\":0".into(),
            simulation_id: 42,
            simulation_name: "thermal".into(),
            simulation_version: "1.0.0".into(),
            execution_id: "exec-1".into(),
            squid_id: "thermal/1.0.0/x".into(),
            input_hash: "h".into(),
            run_db_path: Some("/runs/exec-1.db".into()),
            created_at_ms: 1_700_000_000_000,
            expires_at_ms: expires,
            metadata,
            user_id: None,
            last_accessed_ms: 0,
            access_count: 0,
            hit_count: 0,
            size_bytes: 0,
            status: simcache_store::cache::EntryStatus::Valid,
        }
    }

    /// The prepared halves give exactly what serializing the whole entry
    /// with the count gives, also when keys and metadata contain the mark.
    #[test]
    fn the_body_is_the_entry_with_its_count() {
        for e in [
            entry(
                Some(json!({"hit_count": 0, "note": "\"hit_count\":0"})),
                Some(1_700_000_000_000 + 86_400_000),
            ),
            entry(None, None),
        ] {
            let body = EntryBody::new(&e).unwrap();
            for n in [0i64, 7, 123_456_789, -1] {
                let got: Value = serde_json::from_slice(&body.with_hit_count(n)).unwrap();
                assert_eq!(got["hit_count"], json!(n));
                assert_eq!(got["cache_key"], json!(e.cache_key));
                assert_eq!(got["metadata"], json!(e.metadata));
                assert_eq!(got["created_at"], json!(format_ms(e.created_at_ms)));
                assert_eq!(got["expires_at"], json!(e.expires_at_ms.map(format_ms)));
                assert_eq!(
                    got["ttl_hours"],
                    json!(
                        e.expires_at_ms
                            .map(|x| (x - e.created_at_ms) as f64 / 3_600_000.0)
                    )
                );
                assert_eq!(got.as_object().unwrap().len(), 13, "the seed's 13 fields");
            }
        }
    }
}

//! Cache policies without I/O: which policy governs a simulation, and which
//! entries the LRU sweep evicts to bring a policy back within its limits.

use std::collections::BTreeMap;

use simcache_crds::{CachePolicy, CachePolicySpec};

/// True when the policy's selector picks the simulation (by name, glob
/// pattern or labels; an empty selector picks nothing).
pub fn selects(p: &CachePolicySpec, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let s = &p.selector;
    if s.names.iter().any(|n| n == name) {
        return true;
    }
    if s.patterns.iter().any(|pat| {
        globset::Glob::new(pat)
            .map(|g| g.compile_matcher().is_match(name))
            .unwrap_or(false)
    }) {
        return true;
    }
    !s.match_labels.is_empty()
        && s.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
}

/// The policy for a simulation: the one it names, else the first (by name)
/// whose selector picks it.
pub fn policy_for<'a>(
    policies: &'a [CachePolicy],
    policy_ref: Option<&str>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Option<&'a CachePolicy> {
    let named = |n: &str| {
        policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(n))
    };
    if let Some(r) = policy_ref {
        return named(r);
    }
    let mut matching: Vec<&CachePolicy> = policies
        .iter()
        .filter(|p| selects(&p.spec, name, labels))
        .collect();
    matching.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    matching.into_iter().next()
}

/// What the sweep needs to know of one cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryUse {
    pub cache_key: String,
    pub last_accessed_ms: i64,
    pub size_bytes: i64,
}

/// Least recently used first, the entries to evict so that at most
/// `max_entries` entries and `max_bytes` bytes remain.
pub fn choose_evictions(
    entries: &[EntryUse],
    max_entries: Option<i64>,
    max_bytes: Option<i64>,
) -> Vec<String> {
    let mut order: Vec<&EntryUse> = entries.iter().collect();
    // Oldest access first; ties broken by key so the choice is stable.
    order.sort_by(|a, b| {
        a.last_accessed_ms
            .cmp(&b.last_accessed_ms)
            .then_with(|| a.cache_key.cmp(&b.cache_key))
    });
    let mut count = entries.len() as i64;
    let mut bytes: i64 = entries.iter().map(|e| e.size_bytes.max(0)).sum();
    let mut evict = Vec::new();
    for e in order {
        let over_count = max_entries.is_some_and(|m| count > m);
        let over_bytes = max_bytes.is_some_and(|m| bytes > m);
        if !over_count && !over_bytes {
            break;
        }
        evict.push(e.cache_key.clone());
        count -= 1;
        bytes -= e.size_bytes.max(0);
    }
    evict
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, selector: serde_json::Value) -> CachePolicy {
        serde_json::from_value(json!({
            "apiVersion": "simcache.io/v1alpha1", "kind": "CachePolicy",
            "metadata": {"name": name}, "spec": {"selector": selector}
        }))
        .unwrap()
    }

    #[test]
    fn selection_by_reference_name_glob_and_labels() {
        let ps = vec![
            policy("z-by-label", json!({"matchLabels": {"team": "mech"}})),
            policy("b-glob", json!({"patterns": ["therm*"]})),
            policy("a-name", json!({"names": ["thermal"]})),
            policy("empty", json!({})),
        ];
        let none = BTreeMap::new();
        let mech = BTreeMap::from([("team".to_string(), "mech".to_string())]);
        let pick = |r: Option<&str>, n: &str, l: &BTreeMap<String, String>| {
            policy_for(&ps, r, n, l).and_then(|p| p.metadata.name.clone())
        };
        assert_eq!(pick(None, "thermal", &none).as_deref(), Some("a-name"));
        assert_eq!(pick(None, "thermo", &none).as_deref(), Some("b-glob"));
        assert_eq!(pick(None, "fluid", &mech).as_deref(), Some("z-by-label"));
        assert_eq!(
            pick(None, "fluid", &none),
            None,
            "an empty selector picks nothing"
        );
        assert_eq!(
            pick(Some("z-by-label"), "thermal", &none).as_deref(),
            Some("z-by-label")
        );
        assert_eq!(pick(Some("missing"), "thermal", &none), None);
    }

    fn e(key: &str, at: i64, size: i64) -> EntryUse {
        EntryUse {
            cache_key: key.into(),
            last_accessed_ms: at,
            size_bytes: size,
        }
    }

    #[test]
    fn lru_evicts_the_least_recently_used_until_within_limits() {
        let entries = vec![
            e("c", 30, 10),
            e("a", 10, 10),
            e("b", 20, 100),
            e("d", 40, 10),
        ];
        assert!(choose_evictions(&entries, None, None).is_empty());
        assert!(choose_evictions(&entries, Some(4), Some(130)).is_empty());
        assert_eq!(choose_evictions(&entries, Some(2), None), vec!["a", "b"]);
        // 130 bytes, at most 50: dropping a (10) and b (100) leaves 20.
        assert_eq!(choose_evictions(&entries, None, Some(50)), vec!["a", "b"]);
        assert_eq!(choose_evictions(&entries, Some(3), Some(125)), vec!["a"]);
        assert_eq!(choose_evictions(&entries, Some(0), None).len(), 4);
    }
}

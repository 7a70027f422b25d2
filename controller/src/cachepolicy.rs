//! The CachePolicy controller: every sweep interval, drops expired entries
//! and evicts the least recently used entries of the simulations the policy
//! governs until they fit its limits, then reports entries, bytes, hits,
//! misses and the hit rate in the status.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use simcache_crds::{CachePolicy, CachePolicyStatus};
use simcache_store::cache::{CacheEntry, EntryStatus, ListQuery};
use simcache_store::clock::now_ms;

use crate::{Context, Result};
use simcache_core::cache_key::catalog_name;
use simcache_core::conditions;
use simcache_core::policy::{EntryUse, choose_evictions};

/// Entries read per page while sweeping.
const PAGE: i64 = 1000;

pub async fn reconcile(policy: Arc<CachePolicy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = policy.namespace().unwrap_or_default();
    let me = policy.name_any();
    let names = governed(&ctx, &ns, &me);
    let expired = ctx.stores.cache.sweep_expired(now_ms()).await?;
    if expired > 0 {
        ctx.metrics
            .evictions
            .with_label_values(&["expired"])
            .inc_by(expired);
    }
    let entries = valid_entries(&ctx, &names).await?;
    let uses: Vec<EntryUse> = entries
        .iter()
        .map(|e| EntryUse {
            cache_key: e.cache_key.clone(),
            last_accessed_ms: e.last_accessed_ms,
            size_bytes: e.size_bytes,
        })
        .collect();
    let evict = choose_evictions(&uses, policy.spec.max_entries, policy.spec.max_bytes);
    for key in &evict {
        ctx.stores.cache.delete(key).await?;
    }
    if !evict.is_empty() {
        ctx.metrics
            .evictions
            .with_label_values(&["lru"])
            .inc_by(evict.len() as u64);
        ctx.event(
            &*policy,
            false,
            "Evicted",
            format!("evicted {} least recently used entries", evict.len()),
        )
        .await;
    }
    let kept: Vec<_> = entries
        .iter()
        .filter(|e| !evict.contains(&e.cache_key))
        .collect();
    let kept_bytes: i64 = kept.iter().map(|e| e.size_bytes).sum();
    ctx.metrics
        .policy_entries
        .with_label_values(&[ns.as_str(), me.as_str()])
        .set(kept.len() as i64);
    ctx.metrics
        .policy_bytes
        .with_label_values(&[ns.as_str(), me.as_str()])
        .set(kept_bytes);
    let (hits, total_runs) = hits_and_runs(&ctx, &names).await?;
    let previous = policy.status.clone().unwrap_or_default();
    let governs = if names.is_empty() {
        "no simulations".into()
    } else {
        names.join(", ")
    };
    let mut conditions = previous.conditions.clone();
    conditions::set(
        &mut conditions,
        "Ready",
        true,
        "Swept",
        format!("governs {governs}"),
        policy.metadata.generation,
        k8s_openapi::jiff::Timestamp::now(),
    );
    let status = CachePolicyStatus {
        entries: kept.len() as i64,
        bytes: kept_bytes,
        hits,
        misses: (total_runs - hits).max(0),
        evictions: previous.evictions + evict.len() as i64 + expired as i64,
        hit_rate: (total_runs > 0)
            .then(|| format!("{:.0}%", hits as f64 * 100.0 / total_runs as f64)),
        observed_generation: policy.metadata.generation,
        conditions,
    };
    if status != previous {
        ctx.api::<CachePolicy>(&ns)
            .patch_status(
                &me,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(Action::requeue(ctx.cfg.sweep_interval))
}

/// The simulations (catalog names) the policy `me` of namespace `ns` governs.
fn governed(ctx: &Context, ns: &str, me: &str) -> Vec<String> {
    let mut names: Vec<String> = ctx
        .simulations
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(ns))
        .filter(|s| ctx.policy_of(s).and_then(|p| p.metadata.name).as_deref() == Some(me))
        .map(|s| catalog_name(&s))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every valid cache entry of the simulations, read a page at a time.
async fn valid_entries(ctx: &Context, names: &[String]) -> Result<Vec<CacheEntry>> {
    let mut entries = Vec::new();
    for name in names {
        let mut offset = 0;
        loop {
            let (page, total) = ctx
                .stores
                .cache
                .list(&ListQuery {
                    limit: PAGE,
                    offset,
                    simulation_name: Some(name.clone()),
                    status: Some(EntryStatus::Valid),
                    ..Default::default()
                })
                .await?;
            offset += page.len() as i64;
            let done = page.is_empty() || offset >= total;
            entries.extend(page);
            if done {
                break;
            }
        }
    }
    Ok(entries)
}

/// (cache hits, runs) over every version of the simulations.
async fn hits_and_runs(ctx: &Context, names: &[String]) -> Result<(i64, i64)> {
    let (mut hits, mut total_runs) = (0i64, 0i64);
    for name in names {
        for v in ctx.stores.catalog.versions(name).await? {
            let st = ctx.stores.catalog.stats(v.id).await?;
            hits += st.cached;
            total_runs += st.total_executions;
        }
    }
    Ok((hits, total_runs))
}

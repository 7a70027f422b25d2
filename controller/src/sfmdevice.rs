//! The SFMDevice controller: validates the spec, registers the unit's
//! connection key in the shared store (a second SFMDevice at the same
//! address gets `Conflict` and is not served), probes info and monitor
//! status **through the proxies' cache path** when asked, and copies what
//! the proxies counted into the status and gauges. A finalizer unregisters
//! the device (and purges its cache when `purgeOnDelete`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use serde_json::json;
use simcache_crds::sfm::{SFMDevice, SFMDeviceStatus};
use simcache_sfm::device::RegisterError;
use simcache_sfm::route::{Flags, Op};
use simcache_store::clock::now_ms;
use simcache_store::sfm::{DeviceRow, Registration};

use crate::metrics::SFM_COUNTERS;
use crate::{Context, Error, Result};
use simcache_core::conditions;

pub const FINALIZER: &str = "simcache.io/sfm-registration";

/// How often counters are copied into the status when no probe is set.
const STATUS_REFRESH: Duration = Duration::from_secs(30);

pub async fn reconcile(dev: Arc<SFMDevice>, ctx: Arc<Context>) -> Result<Action> {
    let ns = dev.namespace().unwrap_or_default();
    let api = ctx.api::<SFMDevice>(&ns);
    finalizer(&api, FINALIZER, dev, |ev| async {
        match ev {
            Finalizer::Apply(d) => apply(&d, &ctx).await,
            Finalizer::Cleanup(d) => cleanup(&d, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    })
}

/// The conditions one reconcile sets.
struct Verdict {
    ready: (bool, &'static str, String),
    reachable: Option<(bool, String, String)>,
    conflict: (bool, &'static str, String),
}

/// `Reachable` from what the proxies recorded. Pure.
pub fn reachability(suspended: bool, row: Option<&DeviceRow>) -> Option<(bool, String, String)> {
    if suspended {
        return Some((
            false,
            "Suspended".into(),
            "spec.suspend is set: served from the cache only".into(),
        ));
    }
    let row = row?;
    if row.failures > 0 {
        return Some((
            false,
            row.last_error_reason
                .clone()
                .unwrap_or_else(|| "Unreachable".into()),
            row.last_error
                .clone()
                .unwrap_or_else(|| "the last contact failed".into()),
        ));
    }
    row.last_success_ms.map(|_| {
        (
            true,
            "Contacted".to_string(),
            "the last contact succeeded".to_string(),
        )
    })
}

fn rfc3339(ms: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

async fn apply(dev: &SFMDevice, ctx: &Context) -> Result<Action> {
    let ns = dev.namespace().unwrap_or_default();
    let name = dev.name_any();
    let previous = dev.status.clone().unwrap_or_default();
    let mut status = SFMDeviceStatus {
        observed_generation: dev.metadata.generation,
        ..previous.clone()
    };
    let registered = match simcache_sfm::device::register(&ctx.stores.sfm, dev, now_ms()).await {
        Err(RegisterError::Invalid(why)) => Err(why),
        Err(RegisterError::Store(e)) => return Err(Error::Store(e)),
        Err(e @ RegisterError::Encode(_)) => {
            return Err(Error::Store(simcache_store::StoreError::Corrupt(
                e.to_string(),
            )));
        }
        Ok(r) => Ok(r),
    };
    let (verdict, requeue) = match registered {
        Err(why) => (
            Verdict {
                ready: (false, "InvalidSpec", why.to_string()),
                reachable: None,
                conflict: (false, "NoConflict", "not registered".into()),
            },
            Action::await_change(),
        ),
        Ok((
            key,
            Registration::Conflict {
                namespace,
                name: other,
            },
        )) => {
            status.conn_key = Some(key.clone());
            (
                Verdict {
                    ready: (
                        false,
                        "AddressInUse",
                        format!("not served: {key} belongs to another SFMDevice"),
                    ),
                    reachable: None,
                    conflict: (
                        true,
                        "AddressInUse",
                        format!(
                            "{key} is already registered by SFMDevice {namespace}/{other}; this one is not served"
                        ),
                    ),
                },
                // Served once the other one goes.
                Action::requeue(STATUS_REFRESH),
            )
        }
        Ok((key, Registration::Registered)) => {
            status.conn_key = Some(key.clone());
            served(ctx, dev, &key, &mut status).await?
        }
    };
    let now = k8s_openapi::jiff::Timestamp::now();
    status.conditions =
        conditions_after(&previous.conditions, verdict, dev.metadata.generation, now);
    if status != previous {
        ctx.api::<SFMDevice>(&ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(requeue)
}

/// A registered device: probed when its interval says so, its status
/// filled from the proxies' shared record, its gauges set.
async fn served(
    ctx: &Context,
    dev: &SFMDevice,
    key: &str,
    status: &mut SFMDeviceStatus,
) -> Result<(Verdict, Action)> {
    let ns = dev.namespace().unwrap_or_default();
    let name = dev.name_any();
    let interval = dev.spec.probe.interval_seconds;
    if interval > 0 && !dev.spec.suspend {
        probe(ctx, dev, key).await;
    }
    let row = ctx.stores.sfm.device(key).await?;
    let amounts = ctx.stores.sfm.amounts(Some(key)).await?;
    if let Some(r) = &row {
        status.serial = r.serial.clone().or(status.serial.take());
        status.firmware = r.firmware.clone().or(status.firmware.take());
        status.event_count = r.event_count.or(status.event_count);
        let c = r.counters;
        status.hits = c.hits;
        status.misses = c.misses;
        status.upstream_calls = c.upstream_calls;
        status.coalesced = c.coalesced;
        status.stale_served = c.stale_served;
        status.hit_rate = (c.hits + c.misses > 0)
            .then(|| format!("{:.1}%", c.hits as f64 * 100.0 / (c.hits + c.misses) as f64));
        status.last_contact_time = r.last_contact_ms.and_then(rfc3339);
        status.last_success_time = r.last_success_ms.and_then(rfc3339);
        status.last_error = r.last_error.clone().filter(|_| r.failures > 0);
        for (counter, v) in SFM_COUNTERS.iter().zip([
            c.hits,
            c.misses,
            c.upstream_calls,
            c.coalesced,
            c.stale_served,
        ]) {
            ctx.metrics
                .sfm_device_counters
                .with_label_values(&[ns.as_str(), name.as_str(), counter])
                .set(v);
        }
    }
    status.cached_events = amounts.events;
    status.cached_waveforms = amounts.waveforms;
    status.cached_bytes = amounts.bytes;
    let reachable = reachability(dev.spec.suspend, row.as_ref());
    ctx.metrics
        .sfm_device_reachable
        .with_label_values(&[ns.as_str(), name.as_str()])
        .set(i64::from(reachable.as_ref().is_some_and(|r| r.0)));
    let every = if interval > 0 {
        Duration::from_secs(interval as u64)
    } else {
        STATUS_REFRESH
    };
    Ok((
        Verdict {
            ready: (true, "Registered", format!("served at {key}")),
            reachable,
            conflict: (false, "NoConflict", "the address is this device's".into()),
        },
        Action::requeue(every),
    ))
}

/// The device's conditions after `verdict`.
fn conditions_after(
    previous: &[Condition],
    verdict: Verdict,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) -> Vec<Condition> {
    let mut c: Vec<Condition> = previous.to_vec();
    let (ok, reason, msg) = verdict.ready;
    conditions::set(&mut c, "Ready", ok, reason, msg, generation, now);
    let (on, reason, msg) = verdict.conflict;
    conditions::set(&mut c, "Conflict", on, reason, msg, generation, now);
    match verdict.reachable {
        Some((ok, reason, msg)) => {
            conditions::set(&mut c, "Reachable", ok, &reason, msg, generation, now)
        }
        None => conditions::set(
            &mut c,
            "Reachable",
            conditions::Truth::Unknown,
            "NotContacted",
            "the unit has not been contacted yet",
            generation,
            now,
        ),
    }
    c
}

/// Reads info and monitor status through the proxies' own cache path: a
/// probe warms the cache and is answered by it while it is fresh.
async fn probe(ctx: &Context, dev: &SFMDevice, key: &str) {
    let svc = &ctx.sfm;
    if let Err(e) = svc.registry().reload_one(key).await {
        tracing::warn!(error = %e, "could not load the SFMDevice registration for its probe");
        return;
    }
    let Some(d) = svc.registry().get(key) else {
        return;
    };
    let query = simcache_sfm::device::query_for(&dev.spec);
    for op in [Op::Info, Op::Status] {
        let a = svc.read(&d, op, Flags::default(), &query).await;
        tracing::debug!(device = %d.label, route = op.route(), status = a.status.as_u16(), source = a.source.as_str(), "probe");
    }
    let _ = svc.registry().reload_one(key).await;
}

async fn cleanup(dev: &SFMDevice, ctx: &Context) -> Result<Action> {
    let ns = dev.namespace().unwrap_or_default();
    let name = dev.name_any();
    // Only this object's own registration: never another's at the same address.
    let uid = dev
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("local:{ns}/{name}"));
    ctx.stores
        .sfm
        .unregister(&uid, dev.spec.cache.purge_on_delete)
        .await?;
    ctx.metrics.forget_sfm_device(&ns, &name);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(failures: i64, success: Option<i64>) -> DeviceRow {
        DeviceRow {
            conn_key: "tcp:a:1".into(),
            namespace: "n".into(),
            name: "d".into(),
            uid: "u".into(),
            settings: "{}".into(),
            serial: None,
            firmware: None,
            event_count: None,
            counters: Default::default(),
            last_contact_ms: Some(1),
            last_success_ms: success,
            last_error: Some("SFM service refused the connection".into()),
            last_error_reason: Some("ConnectRefused".into()),
            failures,
            unreachable_until_ms: 0,
        }
    }

    #[test]
    fn reachable_follows_the_last_contact() {
        assert_eq!(reachability(false, None), None);
        assert_eq!(reachability(false, Some(&row(0, None))), None);
        assert!(reachability(false, Some(&row(0, Some(5)))).unwrap().0);
        let down = reachability(false, Some(&row(2, Some(5)))).unwrap();
        assert_eq!((down.0, down.1.as_str()), (false, "ConnectRefused"));
        let s = reachability(true, Some(&row(0, Some(5)))).unwrap();
        assert_eq!((s.0, s.1.as_str()), (false, "Suspended"));
    }
}

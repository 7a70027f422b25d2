//! The controllers' Prometheus metrics. Reconcile metrics use
//! controller-runtime's names and labels so that existing dashboards for Go
//! operators work unchanged.

use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The controllers, as the `controller` label names them.
pub const CONTROLLERS: [&str; 6] = [
    "simulation",
    "simulationrun",
    "cachepolicy",
    "sfmdevice",
    "systemofrecord",
    "simulationsweep",
];
/// The counters of an SFMDevice copied into `simcache_operator_sfm_device_counters`.
pub const SFM_COUNTERS: [&str; 5] = [
    "hits",
    "misses",
    "upstream_calls",
    "coalesced",
    "stale_served",
];
/// The condition types of an SFMDevice.
pub const SFM_CONDITIONS: [&str; 3] = ["Ready", "Reachable", "Conflict"];
const RESULTS: [&str; 4] = ["success", "requeue", "requeue_after", "error"];
const PHASES: [&str; 6] = [
    "Pending",
    "WaitingForCache",
    "Running",
    "Succeeded",
    "Failed",
    "Cached",
];
const LOOKUPS: [&str; 5] = ["hit", "miss", "wait", "bypass", "error"];
const EVICTION_REASONS: [&str; 2] = ["expired", "lru"];

#[derive(Clone)]
pub struct ControllerMetrics {
    reconcile_total: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_time: HistogramVec,
    /// Failed reconciliations by controller and kind of error.
    reconcile_failures: IntCounterVec,
    /// Requests the operator sent the Kubernetes API, by verb.
    pub kube_requests: IntCounterVec,
    /// 1 when the API server is new enough for native sidecars.
    pub kubernetes_supported: IntGauge,
    /// Runs reaching each phase (transitions, not a gauge of current state).
    pub run_phase: IntCounterVec,
    /// Cache decisions at the operator: hit, miss, wait, bypass.
    pub cache_lookups: IntCounterVec,
    pub run_duration: Histogram,
    /// Seconds of computing the cache saved: on each hit, the duration of
    /// the run that produced the result.
    pub compute_seconds_saved: prometheus::Counter,
    pub leader: IntGauge,
    pub evictions: IntCounterVec,
    /// Valid entries and their bytes per CachePolicy, as its last sweep saw.
    pub policy_entries: IntGaugeVec,
    pub policy_bytes: IntGaugeVec,
    /// SFMDevices by condition type and status.
    pub sfm_devices: IntGaugeVec,
    /// SimulationRuns by phase, now (the watch cache, sampled every few seconds).
    pub runs: IntGaugeVec,
    /// 1 while an SFMDevice's unit is reachable.
    pub sfm_device_reachable: IntGaugeVec,
    /// An SFMDevice's counters (hits, misses, …) summed over every proxy.
    pub sfm_device_counters: IntGaugeVec,
    /// The SFM cache path the probes use (`simcache_sfm_*`).
    pub sfm: simcache_sfm::metrics::SfmMetrics,
}

impl ControllerMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let m = ControllerMetrics {
            reconcile_total: counters(
                r,
                "controller_runtime_reconcile_total",
                "Total number of reconciliations per controller",
                &["controller", "result"],
            )?,
            reconcile_errors: counters(
                r,
                "controller_runtime_reconcile_errors_total",
                "Total number of reconciliation errors per controller",
                &["controller"],
            )?,
            reconcile_time: registered(r, reconcile_time()?)?,
            reconcile_failures: counters(
                r,
                "simcache_operator_reconcile_failures_total",
                "Failed reconciliations by controller and kind of error",
                &["controller", "error"],
            )?,
            kube_requests: counters(
                r,
                "simcache_operator_kube_requests_total",
                "Requests sent to the Kubernetes API, by verb (get, list, watch, create, update, patch, delete)",
                &["verb"],
            )?,
            kubernetes_supported: registered(
                r,
                IntGauge::new(
                    "simcache_operator_kubernetes_version_supported",
                    "1 when the API server is Kubernetes 1.29 or newer (native sidecars); 0 below it",
                )?,
            )?,
            run_phase: counters(
                r,
                "simcache_operator_run_phase_transitions_total",
                "SimulationRuns entering each phase",
                &["phase"],
            )?,
            cache_lookups: counters(
                r,
                "simcache_operator_cache_lookups_total",
                "Cache decisions for SimulationRuns (hit, miss, wait, bypass, error)",
                &["result"],
            )?,
            run_duration: registered(r, run_duration()?)?,
            compute_seconds_saved: registered(
                r,
                prometheus::Counter::new(
                    "simcache_operator_compute_seconds_saved_total",
                    "Seconds of computing the cache saved: the producing run's duration, counted on each cache hit",
                )?,
            )?,
            leader: registered(
                r,
                IntGauge::new(
                    "simcache_operator_leader",
                    "1 while this replica holds the leader lease",
                )?,
            )?,
            evictions: counters(
                r,
                "simcache_operator_cache_evictions_total",
                "Cache entries removed by CachePolicy sweeps",
                &["reason"],
            )?,
            policy_entries: gauges(
                r,
                "simcache_operator_cache_entries",
                "Valid cache entries governed by each CachePolicy",
                &["policy_namespace", "policy"],
            )?,
            policy_bytes: gauges(
                r,
                "simcache_operator_cache_bytes",
                "Bytes of the valid cache entries governed by each CachePolicy",
                &["policy_namespace", "policy"],
            )?,
            sfm_devices: gauges(
                r,
                "simcache_operator_sfm_devices",
                "SFMDevices by condition type and status",
                &["condition", "status"],
            )?,
            sfm_device_reachable: gauges(
                r,
                "simcache_operator_sfm_device_reachable",
                "1 while the SFMDevice's unit answers, 0 while the proxies back off",
                &["sfmdevice_namespace", "sfmdevice"],
            )?,
            sfm_device_counters: gauges(
                r,
                "simcache_operator_sfm_device_counters",
                "An SFMDevice's request counters summed over every proxy (as in its status)",
                &["sfmdevice_namespace", "sfmdevice", "counter"],
            )?,
            runs: gauges(
                r,
                "simcache_operator_runs",
                "SimulationRuns by phase, as the operator's watch sees them now",
                &["phase"],
            )?,
            sfm: simcache_sfm::metrics::SfmMetrics::register(r)?,
        };
        m.start_known_series_at_zero();
        Ok(m)
    }

    /// Every known label set starts at zero, so that rates and alert
    /// ratios exist from the first scrape instead of appearing only after
    /// the first error (Prometheus cannot rate a series it never saw).
    fn start_known_series_at_zero(&self) {
        for c in CONTROLLERS {
            for res in RESULTS {
                self.reconcile_total.with_label_values(&[c, res]);
            }
            self.reconcile_errors.with_label_values(&[c]);
            self.reconcile_time.with_label_values(&[c]);
            for e in crate::Error::LABELS {
                self.reconcile_failures.with_label_values(&[c, e]);
            }
        }
        for v in KUBE_VERBS {
            self.kube_requests.with_label_values(&[v]);
        }
        for p in PHASES {
            self.run_phase.with_label_values(&[p]);
        }
        for l in LOOKUPS {
            self.cache_lookups.with_label_values(&[l]);
        }
        for e in EVICTION_REASONS {
            self.evictions.with_label_values(&[e]);
        }
        for p in simcache_core::lifecycle::PHASES {
            self.runs
                .with_label_values(&[simcache_core::lifecycle::phase_name(p)]);
        }
        for c in SFM_CONDITIONS {
            for st in ["True", "False", "Unknown"] {
                self.sfm_devices.with_label_values(&[c, st]);
            }
        }
    }

    /// Drops an SFMDevice's series (it was deleted).
    pub fn forget_sfm_device(&self, namespace: &str, name: &str) {
        let _ = self
            .sfm_device_reachable
            .remove_label_values(&[namespace, name]);
        for c in SFM_COUNTERS {
            let _ = self
                .sfm_device_counters
                .remove_label_values(&[namespace, name, c]);
        }
        self.sfm.forget(&format!("{namespace}/{name}"));
    }

    /// Drops the per-policy gauges of policies that no longer exist (no
    /// reconcile runs for a deleted object, so nothing else would): a
    /// deleted policy's entries must not stay on dashboards.
    pub fn forget_policies_except(&self, live: &std::collections::HashSet<(String, String)>) {
        use prometheus::core::Collector;
        for gauge in [&self.policy_entries, &self.policy_bytes] {
            let mut gone: Vec<(String, String)> = Vec::new();
            for family in gauge.collect() {
                for m in family.get_metric() {
                    let label = |name: &str| {
                        m.get_label()
                            .iter()
                            .find(|l| l.name() == name)
                            .map(|l| l.value().to_string())
                            .unwrap_or_default()
                    };
                    let key = (label("policy_namespace"), label("policy"));
                    if !live.contains(&key) {
                        gone.push(key);
                    }
                }
            }
            for (ns, name) in gone {
                let _ = gauge.remove_label_values(&[&ns, &name]);
            }
        }
    }

    /// Counts one reconciliation's result: `success`, `requeue_after` or
    /// `error`, as controller-runtime labels them.
    pub fn reconcile_result(&self, controller: &str, result: &str) {
        self.reconcile_total
            .with_label_values(&[controller, result])
            .inc();
        if result == "error" {
            self.reconcile_errors.with_label_values(&[controller]).inc();
        }
    }

    /// Counts a failed reconciliation by its kind of error.
    pub fn reconcile_failed(&self, controller: &str, error: &str) {
        self.reconcile_failures
            .with_label_values(&[controller, error])
            .inc();
    }

    /// Times a reconciliation until the guard is dropped.
    pub fn reconcile_timer(&self, controller: &str) -> ReconcileTimer {
        ReconcileTimer {
            histogram: self.reconcile_time.with_label_values(&[controller]),
            start: Instant::now(),
        }
    }
}

/// Observes the time since it was made when dropped (however the
/// reconciliation ended).
pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// The verbs of `simcache_operator_kube_requests_total`.
pub const KUBE_VERBS: [&str; 8] = [
    "get", "list", "watch", "create", "update", "patch", "delete", "other",
];

/// `c`, registered on `r`.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: C,
) -> prometheus::Result<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// A counter family registered on `r`.
fn counters(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// A gauge family registered on `r`.
fn gauges(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

fn reconcile_time() -> prometheus::Result<HistogramVec> {
    HistogramVec::new(
        HistogramOpts::new(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["controller"],
    )
}

fn run_duration() -> prometheus::Result<Histogram> {
    Histogram::with_opts(
        HistogramOpts::new(
            "simcache_operator_run_duration_seconds",
            "Wall time of simulation runs that ran a pod, by outcome",
        )
        .buckets(vec![
            0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0, 86400.0,
        ]),
    )
}

/// The Kubernetes verb of an API request.
pub fn kube_verb(method: &http::Method, query: Option<&str>, path: &str) -> &'static str {
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *method {
        http::Method::GET if watch => "watch",
        // A collection ends in its plural; a named object has one more segment.
        http::Method::GET => {
            if is_collection(path) {
                "list"
            } else {
                "get"
            }
        }
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// `/api/v1/namespaces/ns/pods` and `/apis/g/v/pods` are collections;
/// `/api/v1/namespaces/ns/pods/p` and `/api/v1/namespaces/ns` are objects.
fn is_collection(path: &str) -> bool {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.first() {
        Some(&"api") => &segs[segs.len().min(2)..],
        Some(&"apis") => &segs[segs.len().min(3)..],
        _ => return false,
    };
    match rest {
        ["namespaces", _, _] | [_] => true,
        ["namespaces", _] => false,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_by_their_kubernetes_verb() {
        let get = http::Method::GET;
        assert_eq!(kube_verb(&get, None, "/api/v1/namespaces/n/pods"), "list");
        assert_eq!(
            kube_verb(&get, Some("watch=true&rv=1"), "/api/v1/namespaces/n/pods"),
            "watch"
        );
        assert_eq!(kube_verb(&get, None, "/api/v1/namespaces/n/pods/p"), "get");
        assert_eq!(
            kube_verb(&get, None, "/apis/simcache.io/v1alpha1/simulationruns"),
            "list"
        );
        assert_eq!(kube_verb(&get, None, "/version"), "get");
        assert_eq!(
            kube_verb(
                &http::Method::PATCH,
                None,
                "/apis/simcache.io/v1alpha1/namespaces/n/simulationruns/r/status"
            ),
            "patch"
        );
        assert_eq!(
            kube_verb(
                &http::Method::POST,
                None,
                "/apis/events.k8s.io/v1/namespaces/n/events"
            ),
            "create"
        );
        assert_eq!(
            kube_verb(
                &http::Method::DELETE,
                None,
                "/api/v1/namespaces/n/secrets/s"
            ),
            "delete"
        );
    }

    #[test]
    fn the_timer_observes_when_dropped() {
        let m = ControllerMetrics::register(&Registry::new()).unwrap();
        {
            let _t = m.reconcile_timer("simulation");
        }
        assert_eq!(
            m.reconcile_time
                .with_label_values(&["simulation"])
                .get_sample_count(),
            1
        );
    }
}

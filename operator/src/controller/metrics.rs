//! The controllers' Prometheus metrics. Reconcile metrics use
//! controller-runtime's names and labels so that existing dashboards for Go
//! operators work unchanged.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The controllers, as the `controller` label names them.
pub const CONTROLLERS: [&str; 3] = ["simulation", "simulationrun", "cachepolicy"];
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
    /// Runs reaching each phase (transitions, not a gauge of current state).
    pub run_phase: IntCounterVec,
    /// Cache decisions at the operator: hit, miss, wait, bypass.
    pub cache_lookups: IntCounterVec,
    pub run_duration: Histogram,
    pub leader: IntGauge,
    pub evictions: IntCounterVec,
    /// Valid entries and their bytes per CachePolicy, as its last sweep saw.
    pub policy_entries: IntGaugeVec,
    pub policy_bytes: IntGaugeVec,
}

impl ControllerMetrics {
    pub fn register(r: &Registry) -> prometheus::Result<Self> {
        let reconcile_total = IntCounterVec::new(
            Opts::new(
                "controller_runtime_reconcile_total",
                "Total number of reconciliations per controller",
            ),
            &["controller", "result"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "controller_runtime_reconcile_errors_total",
                "Total number of reconciliation errors per controller",
            ),
            &["controller"],
        )?;
        let reconcile_time = HistogramVec::new(
            HistogramOpts::new(
                "controller_runtime_reconcile_time_seconds",
                "Length of time per reconciliation per controller",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["controller"],
        )?;
        let run_phase = IntCounterVec::new(
            Opts::new(
                "simcache_operator_run_phase_transitions_total",
                "SimulationRuns entering each phase",
            ),
            &["phase"],
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "simcache_operator_cache_lookups_total",
                "Cache decisions for SimulationRuns (hit, miss, wait, bypass, error)",
            ),
            &["result"],
        )?;
        let run_duration = Histogram::with_opts(
            HistogramOpts::new(
                "simcache_operator_run_duration_seconds",
                "Wall time of simulation runs that ran a pod, by outcome",
            )
            .buckets(vec![
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
            ]),
        )?;
        let leader = IntGauge::new(
            "simcache_operator_leader",
            "1 while this replica holds the leader lease",
        )?;
        let evictions = IntCounterVec::new(
            Opts::new(
                "simcache_operator_cache_evictions_total",
                "Cache entries removed by CachePolicy sweeps",
            ),
            &["reason"],
        )?;
        let policy_entries = IntGaugeVec::new(
            Opts::new(
                "simcache_operator_cache_entries",
                "Valid cache entries governed by each CachePolicy",
            ),
            &["namespace", "policy"],
        )?;
        let policy_bytes = IntGaugeVec::new(
            Opts::new(
                "simcache_operator_cache_bytes",
                "Bytes of the valid cache entries governed by each CachePolicy",
            ),
            &["namespace", "policy"],
        )?;
        // Every known label set starts at zero, so that rates and alert
        // ratios exist from the first scrape instead of appearing only after
        // the first error (Prometheus cannot rate a series it never saw).
        for c in CONTROLLERS {
            for res in RESULTS {
                reconcile_total.with_label_values(&[c, res]);
            }
            reconcile_errors.with_label_values(&[c]);
            reconcile_time.with_label_values(&[c]);
        }
        for p in PHASES {
            run_phase.with_label_values(&[p]);
        }
        for l in LOOKUPS {
            cache_lookups.with_label_values(&[l]);
        }
        for e in EVICTION_REASONS {
            evictions.with_label_values(&[e]);
        }
        r.register(Box::new(policy_entries.clone()))?;
        r.register(Box::new(policy_bytes.clone()))?;
        r.register(Box::new(reconcile_total.clone()))?;
        r.register(Box::new(reconcile_errors.clone()))?;
        r.register(Box::new(reconcile_time.clone()))?;
        r.register(Box::new(run_phase.clone()))?;
        r.register(Box::new(cache_lookups.clone()))?;
        r.register(Box::new(run_duration.clone()))?;
        r.register(Box::new(leader.clone()))?;
        r.register(Box::new(evictions.clone()))?;
        Ok(ControllerMetrics {
            reconcile_total,
            reconcile_errors,
            reconcile_time,
            run_phase,
            cache_lookups,
            run_duration,
            leader,
            evictions,
            policy_entries,
            policy_bytes,
        })
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
                    let key = (label("namespace"), label("policy"));
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

    /// Records one reconciliation: `result` is `success`, `requeue`,
    /// `requeue_after` or `error`, as controller-runtime labels them.
    pub fn reconciled(&self, controller: &str, result: &str, took: Duration) {
        self.reconcile_total
            .with_label_values(&[controller, result])
            .inc();
        if result == "error" {
            self.reconcile_errors.with_label_values(&[controller]).inc();
        }
        self.reconcile_time
            .with_label_values(&[controller])
            .observe(took.as_secs_f64());
    }
}

//! The proxy's Prometheus metrics. `device` is `namespace/name` of the
//! SFMDevice; `route` is a fixed set (see `Op::route`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct SfmMetrics {
    pub requests: IntCounterVec,
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    pub coalesced: IntCounterVec,
    pub stale_served: IntCounterVec,
    pub session_wait: Histogram,
    pub reachable: IntGaugeVec,
    pub cached_objects: IntGaugeVec,
    pub cached_bytes: IntGaugeVec,
}

impl SfmMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = SfmMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "simcache_sfm_requests_total",
                    "SFM proxy requests by device, route, where the answer came from, and status",
                ),
                &["device", "route", "source", "status"],
            )?,
            upstream_requests: IntCounterVec::new(
                Opts::new(
                    "simcache_sfm_upstream_requests_total",
                    "Calls to the SFM service by device, route and outcome",
                ),
                &["device", "route", "outcome"],
            )?,
            upstream_duration: HistogramVec::new(
                HistogramOpts::new(
                    "simcache_sfm_upstream_duration_seconds",
                    "Duration of calls to the SFM service (a waveform takes ~35 s on a real unit)",
                )
                .buckets(vec![
                    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
                ]),
                &["route"],
            )?,
            coalesced: IntCounterVec::new(
                Opts::new(
                    "simcache_sfm_coalesced_total",
                    "Reads that joined a fetch already in flight instead of calling upstream",
                ),
                &["device"],
            )?,
            stale_served: IntCounterVec::new(
                Opts::new(
                    "simcache_sfm_stale_served_total",
                    "Cached copies served stale because the unit could not be reached in time",
                ),
                &["device"],
            )?,
            session_wait: Histogram::with_opts(
                HistogramOpts::new(
                    "simcache_sfm_session_wait_seconds",
                    "Time waited for one of a unit's session slots",
                )
                .buckets(vec![
                    0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0,
                ]),
            )?,
            reachable: IntGaugeVec::new(
                Opts::new(
                    "simcache_sfm_device_reachable",
                    "1 when the last contact with the unit succeeded, 0 while backing off",
                ),
                &["device"],
            )?,
            cached_objects: IntGaugeVec::new(
                Opts::new(
                    "simcache_sfm_cached_objects",
                    "Bodies cached per device and kind (shared store)",
                ),
                &["device", "kind"],
            )?,
            cached_bytes: IntGaugeVec::new(
                Opts::new(
                    "simcache_sfm_cached_bytes",
                    "Bytes of bodies cached per device and kind (shared store)",
                ),
                &["device", "kind"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.upstream_requests.clone()))?;
        registry.register(Box::new(m.upstream_duration.clone()))?;
        registry.register(Box::new(m.coalesced.clone()))?;
        registry.register(Box::new(m.stale_served.clone()))?;
        registry.register(Box::new(m.session_wait.clone()))?;
        registry.register(Box::new(m.reachable.clone()))?;
        registry.register(Box::new(m.cached_objects.clone()))?;
        registry.register(Box::new(m.cached_bytes.clone()))?;
        Ok(m)
    }

    /// Drops every series of a device that is no longer registered.
    pub fn forget(&self, device: &str) {
        let _ = self.reachable.remove_label_values(&[device]);
        let _ = self.coalesced.remove_label_values(&[device]);
        let _ = self.stale_served.remove_label_values(&[device]);
        for k in crate::freshness::Kind::ALL {
            let _ = self
                .cached_objects
                .remove_label_values(&[device, k.as_str()]);
            let _ = self.cached_bytes.remove_label_values(&[device, k.as_str()]);
        }
    }
}

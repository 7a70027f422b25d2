//! What every reconciliation shares: the client, the stores, the settings,
//! the metrics, the event recorder, the watches' caches and the per-object
//! error backoff.

use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use simcache_crds::{CachePolicy, Simulation};
use simcache_store::Stores;

use crate::ControllerConfig;
use crate::backoff::Backoff;
use crate::metrics::ControllerMetrics;

pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub cfg: ControllerConfig,
    pub metrics: ControllerMetrics,
    pub recorder: Recorder,
    /// Simulations and policies as the watches last saw them.
    pub simulations: Store<Simulation>,
    pub policies: Store<CachePolicy>,
    /// Consecutive failures per object, for `error_policy`.
    pub backoff: Backoff,
    /// The SFM proxies' cache path, for SFMDevice probes.
    pub sfm: std::sync::Arc<simcache_sfm::SfmService>,
    /// SFMDevices as the watch last saw them (for the pods of Simulations that list them).
    pub sfm_devices: Store<simcache_crds::SFMDevice>,
    /// SystemsOfRecord as the watch last saw them (wired into the pods of Simulations that name them).
    pub sors: Store<simcache_crds::SystemOfRecord>,
    /// The runs sweeps made (labelled simcache.io/sweep), as their watch last saw them.
    pub sweep_runs: Store<simcache_crds::SimulationRun>,
}

impl Context {
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The Simulation `name` in `namespace`, as the watch last saw it.
    pub fn simulation(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<Simulation>> {
        self.simulations
            .get(&ObjectRef::<Simulation>::new(name).within(namespace))
    }

    /// The CachePolicies of a namespace, as the watch last saw them.
    pub fn policies_in(&self, namespace: &str) -> Vec<CachePolicy> {
        self.policies
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .map(|p| (*p).clone())
            .collect()
    }

    /// The policy governing a Simulation (its `cachePolicyRef`, else the
    /// first whose selector picks it).
    pub fn policy_of(&self, sim: &Simulation) -> Option<CachePolicy> {
        let ns = sim.metadata.namespace.clone().unwrap_or_default();
        let policies = self.policies_in(&ns);
        simcache_core::policy::policy_for(
            &policies,
            sim.spec.cache_policy_ref.as_deref(),
            &simcache_core::cache_key::catalog_name(sim),
            sim.metadata.labels.as_ref().unwrap_or(&Default::default()),
        )
        .cloned()
    }

    /// Publishes an Event about `obj` (a failure to publish is only logged:
    /// events are for people, not for correctness).
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, reason, "could not publish an event");
        }
    }
}

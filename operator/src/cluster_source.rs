//! The console's view of the cluster: SimulationSweeps and their runs
//! (inputs, outputs and phase are on each run's status), CachePolicies,
//! SFMDevices and SystemsOfRecord, read from the API server within the
//! operator's namespace scope. The operator hands it to the console.

use std::sync::Arc;

use async_trait::async_trait;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::Store;
use serde::Serialize;
use serde_json::{Value, json};
use simcache_console::source::{
    ResourceKind, Source, SourceError, SweepPoint, SweepView, is_object_name, run_of_execution,
};
use simcache_controller::scope::Scope;
use simcache_core::sweep::LABEL_SWEEP;
use simcache_crds::{SimulationRun, SimulationSweep};

/// The cluster: sweeps and objects read from the API server when a page
/// asks, and every sweep's runs kept by a watch of their own (a 10,000-run
/// sweep is listed from memory, not from the API server, on every replica).
pub struct ClusterObjects {
    client: kube::Client,
    scope: Scope,
    sweep_runs: Store<SimulationRun>,
    watch: tokio::task::JoinHandle<()>,
    /// A sweep page asks for the same sweep three times at once (status,
    /// table, plot) and again every two seconds: one assembled view serves
    /// them for [`CLUSTER_READ_TTL`].
    recent: moka::sync::Cache<(String, String), Arc<SweepView>>,
}

/// How long one read of a sweep is shown before it is read again.
pub const CLUSTER_READ_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a page waits for the first listing of sweep runs before it asks
/// the API server directly.
const WATCH_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl ClusterObjects {
    /// Starts the watch of sweep runs (needs a Tokio runtime).
    pub fn new(client: kube::Client, scope: Scope) -> Self {
        use futures_util::StreamExt;
        use kube::ResourceExt;
        use kube::runtime::{WatchStreamExt, reflector, watcher};
        let (sweep_runs, writer) = reflector::store();
        let events = simcache_controller::scope::watch::<SimulationRun>(
            &client,
            &scope,
            watcher::Config::default().labels(LABEL_SWEEP),
        )
        .modify(|r: &mut SimulationRun| {
            r.managed_fields_mut().clear();
            r.annotations_mut()
                .remove(simcache_controller::LAST_APPLIED);
        })
        .reflect(writer)
        .applied_objects();
        let watch = tokio::spawn(async move {
            events
                .for_each(|r| async move {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "console watch of sweep runs");
                    }
                })
                .await;
        });
        ClusterObjects {
            client,
            scope,
            sweep_runs,
            watch,
            recent: moka::sync::Cache::builder()
                .max_capacity(64)
                .time_to_live(CLUSTER_READ_TTL)
                .build(),
        }
    }

    /// The sweep's runs: from the watch once it has listed, else asked for.
    async fn runs_of(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<Arc<SimulationRun>>, SourceError> {
        use kube::ResourceExt;
        let ready = tokio::time::timeout(WATCH_READY_WAIT, self.sweep_runs.wait_until_ready())
            .await
            .is_ok_and(|r| r.is_ok());
        if ready {
            return Ok(self
                .sweep_runs
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace().as_deref() == Some(namespace)
                        && r.labels().get(LABEL_SWEEP).map(String::as_str) == Some(name)
                })
                .collect());
        }
        let runs: Api<SimulationRun> = Api::namespaced(self.client.clone(), namespace);
        let listed = runs
            .list(&ListParams::default().labels(&format!("{LABEL_SWEEP}={name}")))
            .await
            .map_err(|e| {
                SourceError::cluster(
                    format!("listing the runs of SimulationSweep {namespace}/{name}"),
                    e,
                )
            })?;
        Ok(listed.items.into_iter().map(Arc::new).collect())
    }
}

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// One API per watched namespace, or one for all.
fn apis_in<K>(client: &kube::Client, scope: &Scope) -> Vec<Api<K>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Scope::All => vec![Api::all(client.clone())],
        Scope::Namespaces(ns) => ns
            .iter()
            .map(|n| Api::namespaced(client.clone(), n))
            .collect(),
    }
}

/// Every object of kind `K` in scope, as the console shows it. Specs name
/// Secrets but never hold their values, so they are shown as they are.
async fn summaries<K>(client: &kube::Client, scope: &Scope) -> Result<Vec<Value>, SourceError>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Serialize,
    K::DynamicType: Default,
{
    let mut out = Vec::new();
    for api in apis_in::<K>(client, scope) {
        let list = api.list(&ListParams::default()).await.map_err(|e| {
            SourceError::cluster(format!("listing {}", K::kind(&Default::default())), e)
        })?;
        for item in list.items {
            let v = serde_json::to_value(&item)
                .map_err(|e| SourceError::cluster("reading an object", e))?;
            out.push(json!({
                "namespace": v["metadata"]["namespace"],
                "name": v["metadata"]["name"],
                "spec": v["spec"],
                "status": v.get("status").cloned().unwrap_or_else(|| json!({})),
            }));
        }
    }
    Ok(out)
}

fn view_of(s: &SimulationSweep) -> SweepView {
    SweepView {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
        simulation: s.spec.simulation.name.clone(),
        version: s.spec.simulation.version.clone(),
        status: s
            .status
            .as_ref()
            .and_then(|st| serde_json::to_value(st).ok())
            .unwrap_or_else(|| json!({})),
        points: Vec::new(),
    }
}

fn point_of(r: &SimulationRun) -> SweepPoint {
    let st = r.status.clone().unwrap_or_default();
    SweepPoint {
        run: r.metadata.name.clone().unwrap_or_default(),
        phase: format!("{:?}", st.phase),
        inputs: r.spec.inputs.clone(),
        outputs: st.outputs,
        execution_id: st.cached_from.or(st.execution_id),
    }
}

#[async_trait]
impl Source for ClusterObjects {
    async fn list(&self) -> Result<Vec<SweepView>, SourceError> {
        let mut out = Vec::new();
        for api in apis_in::<SimulationSweep>(&self.client, &self.scope) {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| SourceError::cluster("listing SimulationSweeps", e))?;
            out.extend(list.items.iter().map(view_of));
        }
        Ok(out)
    }

    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SweepView>>, SourceError> {
        if !self.scope.contains(namespace) || !is_object_name(namespace) || !is_object_name(name) {
            return Ok(None);
        }
        let key = (namespace.to_string(), name.to_string());
        if let Some(v) = self.recent.get(&key) {
            return Ok(Some(v));
        }
        let sweeps: Api<SimulationSweep> = Api::namespaced(self.client.clone(), namespace);
        let Some(sweep) = sweeps.get_opt(name).await.map_err(|e| {
            SourceError::cluster(format!("reading SimulationSweep {namespace}/{name}"), e)
        })?
        else {
            return Ok(None);
        };
        let mut view = view_of(&sweep);
        view.points = self
            .runs_of(namespace, name)
            .await?
            .iter()
            .map(|r| point_of(r))
            .collect();
        view.points.sort_by(|a, b| a.run.cmp(&b.run));
        let view = Arc::new(view);
        self.recent.insert(key, view.clone());
        Ok(Some(view))
    }

    async fn run_conditions(&self, execution_id: &str) -> Result<Option<Vec<Value>>, SourceError> {
        let Some((ns, name)) = run_of_execution(execution_id) else {
            return Ok(None);
        };
        if !self.scope.contains(&ns) {
            return Ok(None);
        }
        let runs: Api<SimulationRun> = Api::namespaced(self.client.clone(), &ns);
        let Some(run) = runs
            .get_opt(&name)
            .await
            .map_err(|e| SourceError::cluster(format!("reading SimulationRun {ns}/{name}"), e))?
        else {
            return Ok(None);
        };
        let mut conditions = run.status.map(|s| s.conditions).unwrap_or_default();
        conditions.sort_by_key(|c| c.last_transition_time.0);
        Ok(Some(
            conditions
                .iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect(),
        ))
    }

    async fn resources(&self, kind: ResourceKind) -> Result<Vec<Value>, SourceError> {
        use simcache_crds::{CachePolicy, SFMDevice, SystemOfRecord};
        match kind {
            ResourceKind::CachePolicies => {
                summaries::<CachePolicy>(&self.client, &self.scope).await
            }
            ResourceKind::Devices => summaries::<SFMDevice>(&self.client, &self.scope).await,
            ResourceKind::SystemsOfRecord => {
                summaries::<SystemOfRecord>(&self.client, &self.scope).await
            }
        }
    }
}

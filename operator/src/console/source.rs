//! Where the console reads sweeps from: the cluster's SimulationSweeps and
//! their runs (inputs, outputs and phase are on each run's status), or, in
//! local mode, the record `simcache run` writes under `<home>/sweeps/`.
//! Either way a sweep arrives as a [`SweepView`], so the pages, tables and
//! plots have one code path.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::Store;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use simcache_crds::{SimulationRun, SimulationSweep};

use crate::controller::scope::Scope;
use crate::controller::sweep::LABEL_SWEEP;
use crate::local::{Ended, Outcome};

/// One point of a sweep as it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub run: String,
    /// The run's phase (`Pending`, `Running`, `Succeeded`, `Cached`, `Failed`, …).
    pub phase: String,
    pub inputs: BTreeMap<String, Value>,
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
    /// The execution whose result this point shows (the computing one for a
    /// cached point), for the link to the run page.
    #[serde(default)]
    pub execution_id: Option<String>,
}

/// A sweep: what it is, its status, and (when asked for one) its points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepView {
    pub namespace: String,
    pub name: String,
    pub simulation: String,
    pub version: Option<String>,
    /// The sweep's status as the cluster reports it (counts, phase, progress,
    /// conditions, computeSecondsSaved).
    pub status: Value,
    #[serde(default)]
    pub points: Vec<SweepPoint>,
}

/// Cluster objects the console lists on pages of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    CachePolicies,
    Devices,
    SystemsOfRecord,
}

impl ResourceKind {
    /// From the console's path segment.
    pub fn parse(s: &str) -> Option<ResourceKind> {
        match s {
            "cachepolicies" => Some(ResourceKind::CachePolicies),
            "sfmdevices" => Some(ResourceKind::Devices),
            "systemsofrecord" => Some(ResourceKind::SystemsOfRecord),
            _ => None,
        }
    }
}

impl SweepView {
    /// The sweep without its points (for lists).
    pub fn clone_without_points(&self) -> SweepView {
        SweepView {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            simulation: self.simulation.clone(),
            version: self.version.clone(),
            status: self.status.clone(),
            points: Vec::new(),
        }
    }
}

#[async_trait]
pub trait Source: Send + Sync {
    /// Every sweep, without points.
    async fn list(&self) -> Result<Vec<SweepView>, String>;
    /// One sweep with its points, or None.
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<SweepView>>, String>;
    /// Objects of a kind as {namespace, name, spec, status}; none where
    /// there is no cluster.
    async fn resources(&self, _kind: ResourceKind) -> Result<Vec<Value>, String> {
        Ok(Vec::new())
    }
    /// The conditions of the SimulationRun whose attempt made `execution_id`,
    /// oldest transition first; None where there is no such run here.
    async fn run_conditions(&self, _execution_id: &str) -> Result<Option<Vec<Value>>, String> {
        Ok(None)
    }
}

/// The (namespace, run name) an operator execution id names: ids are
/// `<namespace>.<run>.<8 hex of the run's uid>.<attempt>` (namespaces hold
/// no dots; run names may). None for other ids (local runs, sim2l's).
pub fn run_of_execution(id: &str) -> Option<(String, String)> {
    let (ns, rest) = id.split_once('.')?;
    let mut parts = rest.rsplitn(3, '.');
    let attempt = parts.next()?;
    let uid = parts.next()?;
    let name = parts.next()?;
    let ok = !ns.is_empty()
        && ns != "local"
        && attempt.parse::<u32>().is_ok()
        && uid.len() == 8
        && uid.bytes().all(|b| b.is_ascii_hexdigit())
        && is_name(name);
    ok.then(|| (ns.to_string(), name.to_string()))
}

/// The namespace local sweeps are shown in.
pub const LOCAL_NAMESPACE: &str = "local";

/// `simcache run`'s record of one sweep's points.
pub fn local_points(outcomes: &[Outcome]) -> Vec<SweepPoint> {
    outcomes
        .iter()
        .map(|o| {
            let (phase, execution_id) = match &o.ended {
                Ended::Computed { execution_id, .. } => ("Succeeded", Some(execution_id.clone())),
                Ended::Cached { computed_by, .. } => ("Cached", Some(computed_by.clone())),
                Ended::Failed { .. } => ("Failed", None),
            };
            SweepPoint {
                run: o.run.clone(),
                phase: phase.into(),
                inputs: o.inputs.clone(),
                outputs: match &o.outputs {
                    Value::Object(m) => m.clone().into_iter().collect(),
                    _ => BTreeMap::new(),
                },
                execution_id,
            }
        })
        .collect()
}

/// A local sweep's status, shaped like the cluster's.
pub fn local_status(outcomes: &[Outcome]) -> Value {
    let count = |f: fn(&Ended) -> bool| outcomes.iter().filter(|o| f(&o.ended)).count();
    let succeeded = count(|e| matches!(e, Ended::Computed { .. }));
    let cached = count(|e| matches!(e, Ended::Cached { .. }));
    let failed = count(|e| matches!(e, Ended::Failed { .. }));
    let saved: f64 = outcomes
        .iter()
        .filter_map(|o| match o.ended {
            Ended::Cached { saved, .. } => saved,
            _ => None,
        })
        .sum();
    let total = outcomes.len();
    json!({
        "phase": match (failed, total) {
            (0, _) => "Succeeded",
            (f, t) if f == t => "Failed",
            _ => "PartiallyFailed",
        },
        "total": total,
        "pending": 0,
        "running": 0,
        "succeeded": succeeded,
        "cached": cached,
        "failed": failed,
        "progress": format!("{}/{total}", succeeded + cached + failed),
        "computeSecondsSaved": saved + 0.0,
    })
}

/// Sweeps `simcache run` recorded under `<home>/sweeps/`.
pub struct LocalRecords {
    pub dir: PathBuf,
    /// Records as last parsed, by path, with the file's (mtime, length)
    /// then: a 10,000-point record takes tens of milliseconds to parse, and
    /// every request of a sweep page reads it.
    parsed: parking_lot::Mutex<HashMap<PathBuf, Parsed>>,
}

/// A parsed record and the file's (mtime, length) when it was read.
type Parsed = (Option<SystemTime>, u64, Arc<SweepView>);

/// Records kept parsed at most (each sweep's latest).
const PARSED_RECORDS: usize = 64;

impl LocalRecords {
    pub fn new(dir: PathBuf) -> Self {
        LocalRecords {
            dir,
            parsed: Default::default(),
        }
    }

    fn read(&self, path: &std::path::Path) -> Result<Option<Arc<SweepView>>, String> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let stamp = (meta.modified().ok(), meta.len());
        if let Some((m, l, v)) = self.parsed.lock().get(path)
            && (*m, *l) == stamp
        {
            return Ok(Some(v.clone()));
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        // Records from before the console carry no `view`: not an error,
        // just nothing to show until the sweep is run again.
        let Some(view) = doc.get("view") else {
            return Ok(None);
        };
        let view: Arc<SweepView> = Arc::new(
            serde_json::from_value(view.clone()).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        let mut parsed = self.parsed.lock();
        if parsed.len() >= PARSED_RECORDS {
            parsed.clear();
        }
        parsed.insert(path.to_path_buf(), (stamp.0, stamp.1, view.clone()));
        Ok(Some(view))
    }
}

#[async_trait]
impl Source for LocalRecords {
    async fn list(&self) -> Result<Vec<SweepView>, String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("reading {}: {e}", self.dir.display())),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            if let Some(v) = self.read(&p)? {
                out.push(v.clone_without_points());
            }
        }
        Ok(out)
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<SweepView>>, String> {
        if namespace != LOCAL_NAMESPACE || !is_name(name) {
            return Ok(None);
        }
        self.read(&self.dir.join(format!("{name}.json")))
    }
}

/// A Kubernetes object name: nothing that could leave the sweeps folder.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with('.')
}

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
        let events = crate::controller::scope::watch::<SimulationRun>(
            &client,
            &scope,
            watcher::Config::default().labels(LABEL_SWEEP),
        )
        .modify(|r: &mut SimulationRun| {
            r.managed_fields_mut().clear();
            r.annotations_mut().remove(crate::controller::LAST_APPLIED);
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
    ) -> Result<Vec<Arc<SimulationRun>>, String> {
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
            .map_err(|e| format!("listing the runs of SimulationSweep {namespace}/{name}: {e}"))?;
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
async fn summaries<K>(client: &kube::Client, scope: &Scope) -> Result<Vec<Value>, String>
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
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing {}: {e}", K::kind(&Default::default())))?;
        for item in list.items {
            let v = serde_json::to_value(&item).map_err(|e| e.to_string())?;
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
    async fn list(&self) -> Result<Vec<SweepView>, String> {
        let mut out = Vec::new();
        for api in apis_in::<SimulationSweep>(&self.client, &self.scope) {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing SimulationSweeps: {e}"))?;
            out.extend(list.items.iter().map(view_of));
        }
        Ok(out)
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Arc<SweepView>>, String> {
        if !self.scope.contains(namespace) || !is_name(namespace) || !is_name(name) {
            return Ok(None);
        }
        let key = (namespace.to_string(), name.to_string());
        if let Some(v) = self.recent.get(&key) {
            return Ok(Some(v));
        }
        let sweeps: Api<SimulationSweep> = Api::namespaced(self.client.clone(), namespace);
        let Some(sweep) = sweeps
            .get_opt(name)
            .await
            .map_err(|e| format!("reading SimulationSweep {namespace}/{name}: {e}"))?
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

    async fn run_conditions(&self, execution_id: &str) -> Result<Option<Vec<Value>>, String> {
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
            .map_err(|e| format!("reading SimulationRun {ns}/{name}: {e}"))?
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

    async fn resources(&self, kind: ResourceKind) -> Result<Vec<Value>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(run: &str, t: f64, ended: Ended) -> Outcome {
        Outcome {
            run: run.into(),
            simulation: "thermal".into(),
            inputs: BTreeMap::from([("temperature".into(), json!(t))]),
            outputs: json!({"stress": t * 2.0}),
            ended,
        }
    }

    #[test]
    fn local_records_say_what_each_point_did() {
        let o = vec![
            outcome(
                "a",
                1.0,
                Ended::Computed {
                    seconds: 2.0,
                    execution_id: "e1".into(),
                },
            ),
            outcome(
                "b",
                2.0,
                Ended::Cached {
                    saved: Some(3.5),
                    computed_by: "e0".into(),
                },
            ),
            outcome(
                "c",
                3.0,
                Ended::Failed {
                    message: "boom".into(),
                },
            ),
        ];
        let p = local_points(&o);
        assert_eq!(p[0].phase, "Succeeded");
        assert_eq!(p[1].execution_id.as_deref(), Some("e0"));
        assert_eq!(p[2].execution_id, None);
        assert_eq!(p[0].outputs["stress"], json!(2.0));
        let s = local_status(&o);
        assert_eq!(s["phase"], "PartiallyFailed");
        assert_eq!(s["progress"], "3/3");
        assert_eq!(s["computeSecondsSaved"], 3.5);
        assert_eq!(local_status(&o[..2])["phase"], "Succeeded");
    }

    #[test]
    fn operator_execution_ids_name_their_run() {
        assert_eq!(
            run_of_execution("team-a.grid-1a2b.x.0123abcd.2"),
            Some(("team-a".into(), "grid-1a2b.x".into()))
        );
        for other in [
            "local.grid.ab12cd34.0f00",
            "exec-001",
            "ns.run.zzzzzzzz.1",
            "ns.run.0123abcd.x",
            "ns..0123abcd.1",
        ] {
            assert_eq!(run_of_execution(other), None, "{other}");
        }
    }

    #[test]
    fn names_cannot_leave_the_folder() {
        assert!(is_name("grid-1"));
        for bad in ["", "../x", "a/b", ".hidden", "A", "x%2f"] {
            assert!(!is_name(bad), "{bad}");
        }
    }
}

//! Merges a Simulation's `podTemplate` and a run's `pod` settings into the
//! pod simcache generated (pure: no I/O). What simcache owns is read off the
//! generated pod itself — its labels and annotations, its volumes, the
//! variables it injects, the operator's node selector — so that anything
//! simcache adds later is protected without a list to keep in step. A
//! template that reaches for one of those is refused with a message naming
//! the field; nothing is overridden silently.
//!
//! The merge rules (docs/pod-template.md):
//! - labels, annotations: added; keys simcache sets or under `simcache.io/`
//!   are refused. A run's keys win over its Simulation's.
//! - nodeSelector: added; the operator's keys (`--pod-node-selector`) can't
//!   change. A run's keys win over its Simulation's.
//! - tolerations, topologySpreadConstraints, imagePullSecrets, volumes:
//!   appended (volume names simcache uses are refused).
//! - affinity, serviceAccountName, priorityClassName, schedulerName,
//!   runtimeClassName: set.
//! - pod securityContext: each field set replaces simcache's.
//! - the `simulation` container: env appended (names simcache injects and
//!   any `SIMCACHE_*` refused), envFrom set (simcache's own variables take
//!   precedence, as Kubernetes gives `env` over `envFrom`), volumeMounts of
//!   the template's own volumes, not at or under /simcache; resources entry
//!   by entry over spec.resources; securityContext field by field over the
//!   container's.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use simcache_crds::{ContainerTemplate, PodTemplate, RunPodSettings, SimulationSpec};

use super::refused::{Refused, Rule};
use super::sor_wiring::SorWiring;
use super::{
    PodPlan, RUN_DIR, SIDECAR_CONTAINER, SIMULATION_CONTAINER, SidecarSettings, build_pod,
    check_resources,
};

/// The prefix of the labels, annotations and variables that are simcache's.
const OWNED_KEY_PREFIX: &str = "simcache.io/";
const OWNED_ENV_PREFIX: &str = "SIMCACHE_";
const OWNED_VOLUME_PREFIX: &str = "simcache-";
/// Mounts at or under this path would shadow the run volume.
fn owned_mount_root() -> &'static str {
    RUN_DIR
        .rsplit_once('/')
        .map(|(root, _)| root)
        .filter(|r| !r.is_empty())
        .unwrap_or(RUN_DIR)
}

const SIM: &str = "Simulation spec.podTemplate";
const RUN: &str = "SimulationRun spec.pod";

/// What simcache set on the generated pod, before any template.
struct Owned {
    labels: BTreeSet<String>,
    annotations: BTreeSet<String>,
    volumes: BTreeSet<String>,
    env: BTreeSet<String>,
    node_selector: BTreeMap<String, String>,
}

impl Owned {
    fn of(pod: &Pod, operator_node_selector: &BTreeMap<String, String>) -> Self {
        let keys = |m: &Option<BTreeMap<String, String>>| -> BTreeSet<String> {
            m.iter().flat_map(|m| m.keys().cloned()).collect()
        };
        let spec = pod.spec.as_ref();
        Owned {
            labels: keys(&pod.metadata.labels),
            annotations: keys(&pod.metadata.annotations),
            volumes: spec
                .and_then(|s| s.volumes.as_ref())
                .iter()
                .flat_map(|v| v.iter().map(|v| v.name.clone()))
                .collect(),
            env: spec
                .iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .flat_map(|c| c.env.iter().flatten().map(|e| e.name.clone()))
                .collect(),
            node_selector: operator_node_selector.clone(),
        }
    }

    fn check_key(&self, set: &BTreeSet<String>, at: &str, key: &str) -> Result<(), Refused> {
        if key.starts_with(OWNED_KEY_PREFIX) || set.contains(key) {
            return Err(Refused::new(format!("{at}[{key}]"), Rule::OwnedKey));
        }
        Ok(())
    }

    fn check_node_selector(&self, at: &str, sel: &BTreeMap<String, String>) -> Result<(), Refused> {
        for (k, v) in sel {
            if let Some(ours) = self.node_selector.get(k).filter(|ours| *ours != v) {
                return Err(Refused::new(
                    format!("{at}.nodeSelector[{k}]"),
                    Rule::FixedNodeSelector {
                        ours: ours.clone(),
                        wanted: v.clone(),
                    },
                ));
            }
        }
        Ok(())
    }
}

/// Merges the Simulation's template and the run's settings into `pod`, or
/// says which field reaches for what simcache owns. `pod` is unchanged
/// when refused.
pub fn apply(
    pod: &mut Pod,
    template: Option<&PodTemplate>,
    run: Option<&RunPodSettings>,
    operator_node_selector: &BTreeMap<String, String>,
) -> Result<(), Refused> {
    let owned = Owned::of(pod, operator_node_selector);
    let mut merged = pod.clone();
    if let Some(t) = template {
        apply_template(&mut merged, t, &owned)?;
    }
    if let Some(r) = run {
        apply_run(&mut merged, r, &owned)?;
    }
    *pod = merged;
    Ok(())
}

/// Checks a Simulation's pod settings against a pod like its runs' pods,
/// so its own status can name a refused field before any run tries.
pub fn check_simulation(spec: &SimulationSpec, sidecar: &SidecarSettings) -> Result<(), Refused> {
    for (field, r) in [
        ("resources", &spec.resources),
        ("sidecarResources", &spec.sidecar_resources),
    ] {
        if let Some(r) = r {
            check_resources(r).map_err(|e| e.under(&format!("Simulation spec.{field}")))?;
        }
    }
    let (inputs, schema, sor) = (BTreeMap::new(), Value::Null, SorWiring::default());
    let plan = PodPlan {
        namespace: "check",
        run_name: "check",
        run_uid: "check",
        attempt: 1,
        simulation_name: "check",
        simulation_version: &spec.version,
        image: &spec.image,
        command: &spec.command,
        args: &spec.args,
        resources: spec.resources.as_ref(),
        security_context: spec.security_context.as_ref(),
        sidecar_resources: spec.sidecar_resources.as_ref(),
        schema: &schema,
        inputs: &inputs,
        input_hash: "",
        cache_key: "",
        timeout_seconds: None,
        sidecar,
        sfm_devices: &[],
        sor: &sor,
    };
    let mut pod = build_pod(&plan);
    apply(
        &mut pod,
        spec.pod_template.as_ref(),
        None,
        &sidecar.node_selector,
    )?;
    sidecar.pod_security.admit(&pod)
}

fn apply_template(pod: &mut Pod, t: &PodTemplate, owned: &Owned) -> Result<(), Refused> {
    if let Some(m) = &t.metadata {
        add_keys(
            &mut pod.metadata.labels,
            &m.labels,
            owned,
            &owned.labels,
            &format!("{SIM}.metadata.labels"),
        )?;
        add_keys(
            &mut pod.metadata.annotations,
            &m.annotations,
            owned,
            &owned.annotations,
            &format!("{SIM}.metadata.annotations"),
        )?;
    }
    let Some(ts) = &t.spec else {
        return Ok(());
    };
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let at = format!("{SIM}.spec");
    owned.check_node_selector(&at, &ts.node_selector)?;
    add_map(&mut spec.node_selector, &ts.node_selector);
    append(&mut spec.tolerations, &ts.tolerations);
    append(
        &mut spec.topology_spread_constraints,
        &ts.topology_spread_constraints,
    );
    append(&mut spec.image_pull_secrets, &ts.image_pull_secrets);
    if ts.affinity.is_some() {
        spec.affinity = ts.affinity.clone();
    }
    for (field, from) in [
        (&mut spec.service_account_name, &ts.service_account_name),
        (&mut spec.priority_class_name, &ts.priority_class_name),
        (&mut spec.scheduler_name, &ts.scheduler_name),
        (&mut spec.runtime_class_name, &ts.runtime_class_name),
    ] {
        if from.is_some() {
            field.clone_from(from);
        }
    }
    if let Some(sc) = &ts.security_context {
        spec.security_context = Some(
            overlay(spec.security_context.as_ref(), sc)
                .map_err(|e| Refused::new(format!("{at}.securityContext"), e))?,
        );
    }
    let mut own_volumes = BTreeSet::new();
    for (i, v) in ts.volumes.iter().enumerate() {
        let here = || format!("{at}.volumes[{i}] ({})", v.name);
        if owned.volumes.contains(&v.name) || v.name.starts_with(OWNED_VOLUME_PREFIX) {
            return Err(Refused::new(here(), Rule::OwnedVolume));
        }
        if !own_volumes.insert(v.name.clone()) {
            return Err(Refused::new(here(), Rule::DuplicateVolume));
        }
    }
    append(&mut spec.volumes, &ts.volumes);
    for (i, c) in ts.containers.iter().enumerate() {
        let at = format!("{at}.containers[{i}]");
        if c.name != SIMULATION_CONTAINER {
            let rule = if c.name == SIDECAR_CONTAINER {
                Rule::SidecarContainer(c.name.clone())
            } else {
                Rule::ExtraContainer(c.name.clone())
            };
            return Err(Refused::new(format!("{at}.name"), rule));
        }
        let Some(target) = spec
            .containers
            .iter_mut()
            .find(|x| x.name == SIMULATION_CONTAINER)
        else {
            return Err(Refused::new(at, Rule::NoSimulationContainer));
        };
        apply_container(target, c, owned, &own_volumes, &at)?;
    }
    Ok(())
}

fn apply_container(
    target: &mut Container,
    c: &ContainerTemplate,
    owned: &Owned,
    own_volumes: &BTreeSet<String>,
    at: &str,
) -> Result<(), Refused> {
    for (i, e) in c.env.iter().enumerate() {
        if e.name.starts_with(OWNED_ENV_PREFIX) || owned.env.contains(&e.name) {
            return Err(Refused::new(
                format!("{at}.env[{i}] ({})", e.name),
                Rule::OwnedVariable,
            ));
        }
    }
    let root = owned_mount_root();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let path = m.mount_path.trim_end_matches('/');
        if path == root || path.starts_with(&format!("{root}/")) || path.is_empty() {
            return Err(Refused::new(
                format!("{at}.volumeMounts[{i}] ({})", m.mount_path),
                Rule::RunDirectoryMount(root.to_string()),
            ));
        }
        if !own_volumes.contains(&m.name) {
            return Err(Refused::new(
                format!("{at}.volumeMounts[{i}] ({})", m.name),
                Rule::UnknownVolume,
            ));
        }
    }
    append(&mut target.env, &c.env);
    append(&mut target.env_from, &c.env_from);
    append(&mut target.volume_mounts, &c.volume_mounts);
    if let Some(r) = &c.resources {
        check_resources(r).map_err(|e| e.under(&format!("{at}.resources")))?;
        target.resources = Some(merge_resources(target.resources.as_ref(), r));
    }
    if let Some(sc) = &c.security_context {
        target.security_context = Some(
            overlay(target.security_context.as_ref(), sc)
                .map_err(|e| Refused::new(format!("{at}.securityContext"), e))?,
        );
    }
    Ok(())
}

fn apply_run(pod: &mut Pod, r: &RunPodSettings, owned: &Owned) -> Result<(), Refused> {
    // A run may override its Simulation's template keys, not simcache's.
    add_keys(
        &mut pod.metadata.labels,
        &r.labels,
        owned,
        &owned.labels,
        &format!("{RUN}.labels"),
    )?;
    add_keys(
        &mut pod.metadata.annotations,
        &r.annotations,
        owned,
        &owned.annotations,
        &format!("{RUN}.annotations"),
    )?;
    owned.check_node_selector(RUN, &r.node_selector)?;
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    add_map(&mut spec.node_selector, &r.node_selector);
    append(&mut spec.tolerations, &r.tolerations);
    Ok(())
}

fn add_keys(
    into: &mut Option<BTreeMap<String, String>>,
    from: &BTreeMap<String, String>,
    owned: &Owned,
    owned_keys: &BTreeSet<String>,
    at: &str,
) -> Result<(), Refused> {
    for k in from.keys() {
        owned.check_key(owned_keys, at, k)?;
    }
    add_map(into, from);
    Ok(())
}

fn add_map(into: &mut Option<BTreeMap<String, String>>, from: &BTreeMap<String, String>) {
    if !from.is_empty() {
        into.get_or_insert_with(BTreeMap::new)
            .extend(from.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
}

fn append<T: Clone>(into: &mut Option<Vec<T>>, from: &[T]) {
    if !from.is_empty() {
        into.get_or_insert_with(Vec::new).extend_from_slice(from);
    }
}

/// `over`'s fields set, each in place of `base`'s.
pub(crate) fn overlay<T: Serialize + DeserializeOwned + Default>(
    base: Option<&T>,
    over: &T,
) -> Result<T, Rule> {
    let unmergeable = |e: serde_json::Error| Rule::Unmergeable(e.to_string());
    let mut b = serde_json::to_value(base.unwrap_or(&T::default())).map_err(unmergeable)?;
    let o = serde_json::to_value(over).map_err(unmergeable)?;
    if let (Some(b), Some(o)) = (b.as_object_mut(), o.as_object()) {
        for (k, v) in o {
            if !v.is_null() {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(b).map_err(unmergeable)
}

/// Requests and limits entry by entry, `over`'s winning.
fn merge_resources(
    base: Option<&ResourceRequirements>,
    over: &ResourceRequirements,
) -> ResourceRequirements {
    let mut r = base.cloned().unwrap_or_default();
    for (into, from) in [
        (&mut r.requests, &over.requests),
        (&mut r.limits, &over.limits),
    ] {
        if let Some(from) = from {
            into.get_or_insert_with(BTreeMap::new)
                .extend(from.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    if over.claims.is_some() {
        r.claims.clone_from(&over.claims);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::default_sidecar_resources;
    use crate::pod::security::restricted_violations;
    use serde_json::json;

    fn sidecar() -> SidecarSettings {
        SidecarSettings {
            image: "sidecar:1".into(),
            image_pull_policy: None,
            operator_url: "http://op:8080".into(),
            startup_probe: false,
            node_selector: BTreeMap::from([("pool".to_string(), "sims".to_string())]),
            shared_tier_url: None,
            resources: default_sidecar_resources(),
            pod_security: Default::default(),
        }
    }

    fn spec(extra: Value) -> SimulationSpec {
        let mut base = json!({
            "version": "1.0.0",
            "image": "ghcr.io/x/thermal:1",
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": {"runAsUser": 1000},
            "inputs": {"temperature": {"type": "number"}}
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn generated(spec: &SimulationSpec, s: &SidecarSettings) -> Pod {
        let (inputs, schema, sor) = (
            BTreeMap::from([("temperature".to_string(), json!(300))]),
            json!({}),
            SorWiring::default(),
        );
        build_pod(&PodPlan {
            namespace: "lab",
            run_name: "r",
            run_uid: "uid",
            attempt: 1,
            simulation_name: "thermal",
            simulation_version: "1.0.0",
            image: &spec.image,
            command: &spec.command,
            args: &spec.args,
            resources: spec.resources.as_ref(),
            security_context: spec.security_context.as_ref(),
            sidecar_resources: None,
            schema: &schema,
            inputs: &inputs,
            input_hash: "h",
            cache_key: "k",
            timeout_seconds: None,
            sidecar: s,
            sfm_devices: &[],
            sor: &sor,
        })
    }

    /// The merged pod for a Simulation with `template` and a run with `run`.
    fn merged(template: Value, run: Value) -> Result<Pod, String> {
        let s = sidecar();
        let sim = spec(json!({ "podTemplate": template }));
        let mut pod = generated(&sim, &s);
        let before = pod.clone();
        let run: Option<RunPodSettings> = serde_json::from_value(run).unwrap();
        let r = apply(
            &mut pod,
            sim.pod_template.as_ref(),
            run.as_ref(),
            &s.node_selector,
        );
        if r.is_err() {
            assert_eq!(pod, before, "a refused template leaves the pod as it was");
        }
        r.map(|_| pod).map_err(|e| e.to_string())
    }

    fn full_template() -> Value {
        json!({
            "metadata": {
                "labels": {"kueue.x-k8s.io/queue-name": "research", "team": "a"},
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
            },
            "spec": {
                "nodeSelector": {"pool": "sims", "gpu": "a100"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                    "whenUnsatisfiable": "ScheduleAnyway"}],
                "imagePullSecrets": [{"name": "registry"}],
                "serviceAccountName": "sims",
                "priorityClassName": "batch-low",
                "schedulerName": "volcano",
                "runtimeClassName": "gvisor",
                "securityContext": {"fsGroup": 2000},
                "volumes": [{"name": "meshes", "configMap": {"name": "meshes"}}],
                "containers": [{
                    "name": "simulation",
                    "env": [{"name": "OMP_NUM_THREADS", "value": "4"}],
                    "envFrom": [{"configMapRef": {"name": "tuning"}}],
                    "volumeMounts": [{"name": "meshes", "mountPath": "/data/meshes", "readOnly": true}],
                    "resources": {"limits": {"memory": "2Gi"}, "requests": {"cpu": "2"}},
                    "securityContext": {"readOnlyRootFilesystem": true}
                }]
            }
        })
    }

    #[test]
    fn a_template_shapes_the_pod_and_the_sidecar_stays_simcaches() {
        let plain = generated(&spec(json!({})), &sidecar());
        let pod = merged(full_template(), json!(null)).unwrap();
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["kueue.x-k8s.io/queue-name"], "research");
        assert_eq!(labels["simcache.io/run"], "r", "simcache's labels stay");
        let ann = pod.metadata.annotations.clone().unwrap();
        assert_eq!(
            ann["cluster-autoscaler.kubernetes.io/safe-to-evict"],
            "false"
        );
        assert!(ann.contains_key("simcache.io/cache-key"));
        let spec = pod.spec.clone().unwrap();
        assert_eq!(
            spec.node_selector.unwrap(),
            BTreeMap::from([
                ("pool".to_string(), "sims".to_string()),
                ("gpu".to_string(), "a100".to_string())
            ])
        );
        assert_eq!(spec.tolerations.unwrap()[0].key.as_deref(), Some("gpu"));
        assert!(spec.affinity.unwrap().node_affinity.is_some());
        assert_eq!(spec.topology_spread_constraints.unwrap().len(), 1);
        assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "registry");
        assert_eq!(spec.service_account_name.as_deref(), Some("sims"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.priority_class_name.as_deref(), Some("batch-low"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("volcano"));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        let psc = spec.security_context.unwrap();
        assert_eq!(psc.fs_group, Some(2000));
        assert_eq!(
            psc.run_as_non_root,
            Some(true),
            "simcache's pod fields stay"
        );
        let vols: Vec<_> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(vols, ["simcache-run", "meshes"]);
        let sim = &spec.containers[0];
        let env: BTreeMap<_, _> = sim
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        assert_eq!(env["OMP_NUM_THREADS"].as_deref(), Some("4"));
        assert!(env.contains_key("SIMCACHE_URL"), "injected variables stay");
        assert_eq!(sim.env_from.as_ref().unwrap().len(), 1);
        let mounts: Vec<_> = sim
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect();
        assert_eq!(mounts, ["/simcache/run", "/data/meshes"]);
        assert_eq!(
            serde_json::to_value(sim.resources.clone().unwrap()).unwrap(),
            json!({"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}),
            "entry by entry over spec.resources"
        );
        let sc = sim.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_user, Some(1000), "spec.securityContext stays");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "defaults stay");
        let plain_spec = plain.spec.unwrap();
        assert_eq!(
            spec.init_containers, plain_spec.init_containers,
            "the sidecar is exactly as simcache made it"
        );
        assert_eq!(
            pod.metadata.owner_references,
            plain.metadata.owner_references
        );
        assert_eq!(restricted_violations(&pod), Vec::<String>::new());
    }

    #[test]
    fn a_template_reaching_for_what_simcache_owns_is_refused_naming_the_field() {
        let cases = [
            (
                json!({"metadata": {"labels": {"simcache.io/run": "x"}}}),
                "Simulation spec.podTemplate.metadata.labels[simcache.io/run]: simcache sets this key",
            ),
            (
                json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "me"}}}),
                "metadata.labels[app.kubernetes.io/managed-by]: simcache sets this key",
            ),
            (
                json!({"metadata": {"annotations": {"simcache.io/anything": "x"}}}),
                "metadata.annotations[simcache.io/anything]",
            ),
            (
                json!({"spec": {"containers": [{"name": "simcache-sidecar", "env": []}]}}),
                "spec.containers[0].name: `simcache-sidecar`: the sidecar is simcache's",
            ),
            (
                json!({"spec": {"containers": [{"name": "helper"}]}}),
                "spec.containers[0].name: `helper`: a template can only shape the simulation's container",
            ),
            (
                json!({"spec": {"containers": [{"name": "simulation",
                    "env": [{"name": "A", "value": "1"}, {"name": "SIMCACHE_URL", "value": "http://evil"}]}]}}),
                "spec.containers[0].env[1] (SIMCACHE_URL): simcache injects this variable",
            ),
            (
                json!({"spec": {"volumes": [{"name": "simcache-run", "emptyDir": {}}]}}),
                "spec.volumes[0] (simcache-run): simcache uses this volume name",
            ),
            (
                json!({"spec": {"volumes": [{"name": "simcache-sor-cache", "emptyDir": {}}]}}),
                "spec.volumes[0] (simcache-sor-cache)",
            ),
            (
                json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}]}}),
                "spec.volumes[1] (a): a second volume with this name",
            ),
            (
                json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}], "containers": [{"name": "simulation",
                    "volumeMounts": [{"name": "a", "mountPath": "/simcache/run/x"}]}]}}),
                "spec.containers[0].volumeMounts[0] (/simcache/run/x): /simcache is simcache's run directory",
            ),
            (
                json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}], "containers": [{"name": "simulation",
                    "volumeMounts": [{"name": "a", "mountPath": "/simcache/"}]}]}}),
                "volumeMounts[0] (/simcache/): /simcache is simcache's run directory",
            ),
            (
                json!({"spec": {"containers": [{"name": "simulation",
                    "volumeMounts": [{"name": "simcache-run", "mountPath": "/elsewhere"}]}]}}),
                "spec.containers[0].volumeMounts[0] (simcache-run): names no volume in Simulation spec.podTemplate.spec.volumes",
            ),
            (
                json!({"spec": {"nodeSelector": {"pool": "gpu"}}}),
                "Simulation spec.podTemplate.spec.nodeSelector[pool]: the operator's --pod-node-selector sets it to `sims`",
            ),
            (
                json!({"spec": {"containers": [{"name": "simulation", "resources": {"limits": {"memory": "2GB"}}}]}}),
                "spec.containers[0].resources.limits.memory: `2GB` is not a quantity",
            ),
        ];
        for (template, want) in cases {
            let err = merged(template.clone(), json!(null)).unwrap_err();
            assert!(err.contains(want), "{template}: {err}");
        }
    }

    #[test]
    fn a_run_adds_labels_tolerations_and_node_selector_for_itself() {
        let template = json!({
            "metadata": {"labels": {"team": "a"}},
            "spec": {"nodeSelector": {"gpu": "a100"},
                     "tolerations": [{"key": "gpu", "operator": "Exists"}]}
        });
        let pod = merged(
            template.clone(),
            json!({"labels": {"team": "b", "sweep": "s1"}, "annotations": {"note": "x"},
                   "tolerations": [{"key": "spot", "operator": "Exists"}],
                   "nodeSelector": {"gpu": "h100", "pool": "sims"}}),
        )
        .unwrap();
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(
            (labels["team"].as_str(), labels["sweep"].as_str()),
            ("b", "s1")
        );
        assert_eq!(pod.metadata.annotations.unwrap()["note"], "x");
        let spec = pod.spec.unwrap();
        let keys: Vec<_> = spec
            .tolerations
            .unwrap()
            .into_iter()
            .filter_map(|t| t.key)
            .collect();
        assert_eq!(keys, ["gpu", "spot"]);
        assert_eq!(spec.node_selector.unwrap()["gpu"], "h100");
        // Without a template, too.
        let pod = merged(json!(null), json!({"labels": {"x": "y"}})).unwrap();
        assert_eq!(pod.metadata.labels.unwrap()["x"], "y");
        for (run, want) in [
            (
                json!({"labels": {"simcache.io/simulation": "other"}}),
                "SimulationRun spec.pod.labels[simcache.io/simulation]: simcache sets this key",
            ),
            (
                json!({"annotations": {"simcache.io/execution-id": "x"}}),
                "SimulationRun spec.pod.annotations[simcache.io/execution-id]",
            ),
            (
                json!({"nodeSelector": {"pool": "cheap"}}),
                "SimulationRun spec.pod.nodeSelector[pool]: the operator's --pod-node-selector sets it to `sims`",
            ),
        ] {
            let err = merged(template.clone(), run.clone()).unwrap_err();
            assert!(err.contains(want), "{run}: {err}");
        }
    }

    #[test]
    fn the_operator_enforces_its_pod_security_level_naming_the_field() {
        let mut s = sidecar();
        let host_path = spec(json!({"podTemplate": {"spec": {
            "volumes": [{"name": "scratch", "hostPath": {"path": "/var/scratch"}}],
            "containers": [{"name": "simulation",
                "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}}}));
        let refused = check_simulation(&host_path, &s).unwrap_err();
        assert_eq!(refused.at, "pod spec.volumes[scratch]");
        assert!(
            refused.to_string().contains(
                "Pod Security level restricted on run pods: hostPath volumes are forbidden"
            ),
            "{refused}"
        );
        // Root is a restricted rule only; hostPath a baseline one too.
        let root = spec(json!({"securityContext": {"runAsNonRoot": false, "runAsUser": 0}}));
        assert!(check_simulation(&root, &s).is_err());
        s.pod_security.level = crate::pod::security::Level::Baseline;
        assert_eq!(check_simulation(&root, &s), Ok(()));
        assert!(check_simulation(&host_path, &s).is_err());
        s.pod_security.level = crate::pod::security::Level::Privileged;
        assert_eq!(check_simulation(&host_path, &s), Ok(()));
    }

    #[test]
    fn a_simulation_may_relax_only_its_own_container() {
        let pod = merged(
            json!({"spec": {"securityContext": {"runAsNonRoot": false, "runAsUser": 0},
                   "containers": [{"name": "simulation",
                     "securityContext": {"runAsNonRoot": false, "runAsUser": 0}}]}}),
            json!(null),
        )
        .unwrap();
        let v = restricted_violations(&pod);
        assert!(!v.is_empty());
        assert!(
            v.iter().all(|m| !m.contains("initContainers")),
            "the sidecar keeps its own settings: {v:?}"
        );
        let side = pod.spec.unwrap().init_containers.unwrap()[0]
            .security_context
            .clone()
            .unwrap();
        assert_eq!(
            (side.run_as_non_root, side.run_as_user),
            (Some(true), Some(65532))
        );
    }

    #[test]
    fn a_simulation_is_checked_before_any_run() {
        let mut s = sidecar();
        // The template names the ServiceAccount `sims`: refused until allowed.
        let refused =
            check_simulation(&spec(json!({"podTemplate": full_template()})), &s).unwrap_err();
        assert_eq!(refused.rule, Rule::ServiceAccount("sims".into()));
        assert_eq!(refused.at, "pod spec.serviceAccountName");
        s.pod_security.service_accounts = vec!["sims".into()];
        assert_eq!(
            check_simulation(&spec(json!({"podTemplate": full_template()})), &s),
            Ok(())
        );
        let bad = spec(json!({"podTemplate": {"metadata": {"labels": {"simcache.io/x": "1"}}}}));
        let refused = check_simulation(&bad, &s).unwrap_err();
        assert_eq!(refused.rule, Rule::OwnedKey);
        assert_eq!(
            refused.at,
            "Simulation spec.podTemplate.metadata.labels[simcache.io/x]"
        );
        let bad = spec(json!({"sidecarResources": {"limits": {"memory": "1MB"}}}));
        let refused = check_simulation(&bad, &s).unwrap_err();
        assert_eq!(refused.rule, Rule::Quantity("1MB".into()));
        assert_eq!(
            refused.to_string(),
            "Simulation spec.sidecarResources.limits.memory: `1MB` is not a quantity (e.g. 250m, 1.5, 64Mi, 2Gi)"
        );
    }
}

//! The pod (and its token Secret) that runs one attempt of a SimulationRun:
//! built here without I/O, with deterministic names so that a restarted
//! operator finds what it created instead of creating it twice.

mod refused;
pub mod security;
pub mod sor_wiring;
pub mod template;

pub use refused::{Refused, Rule};

use std::collections::BTreeMap;

use crate::pod_env;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Pod, PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;
use sha2::{Digest, Sha256};
use simcache_rundb::{input_env_name, input_env_value};

/// The sidecar's container name (the test node recognises it by this name
/// too, because API servers before 1.28 drop `restartPolicy` from init
/// containers).
pub const SIDECAR_CONTAINER: &str = "simcache-sidecar";
pub const SIMULATION_CONTAINER: &str = "simulation";
pub const RUN_VOLUME: &str = "simcache-run";
pub const RUN_DIR: &str = "/simcache/run";
pub const SIDECAR_PORT: i32 = 8001;
/// Where the sidecar serves health and metrics alone, on the pod's IP (the
/// API on [`SIDECAR_PORT`] is loopback only): the kubelet's probe and
/// Prometheus come here.
pub const PROBE_PORT: i32 = 9464;
pub const MANAGED_BY: &str = "simcache-operator";
pub const LABEL_RUN: &str = "simcache.io/run";
pub const LABEL_EXECUTION: &str = "simcache.io/execution-id";
pub const LABEL_SIMULATION: &str = "simcache.io/simulation";
pub const TOKEN_KEY_RUN: &str = "run-token";
/// The run's own session (`read_cache`, `write_cache`, `read_sor`,
/// `read_sfm`): the simulation presents it to its sidecar, the sidecar to
/// the shared tier.
pub const TOKEN_KEY_SESSION: &str = "cache-session";
pub const TOKEN_KEY_INGEST: &str = "ingest-token";

/// The sidecar as the operator injects it.
#[derive(Debug, Clone)]
pub struct SidecarSettings {
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// The operator's URL as pods reach it (the ingest route is under it).
    pub operator_url: String,
    /// Give the sidecar a startup probe, so the simulation starts only once
    /// the sidecar serves. API servers before 1.28 (no native sidecars)
    /// refuse probes on init containers.
    pub startup_probe: bool,
    /// Node labels simulation pods must match (`--pod-node-selector`).
    pub node_selector: BTreeMap<String, String>,
    /// The shared tier pods keep the cache in (`--shared-tier-url`); `None`
    /// gives each pod a cache of its own. Pods never get a database URL.
    pub shared_tier_url: Option<String>,
    /// The sidecar container's resources (`--sidecar-resources`).
    pub resources: ResourceRequirements,
    /// What every run pod must meet (`--pod-security-level`).
    pub pod_security: PodSecurity,
}

/// The admission rules the operator applies to every pod it builds, before
/// creating it: a Pod Security Standards level and the ServiceAccounts a
/// `podTemplate` may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSecurity {
    pub level: security::Level,
    /// ServiceAccounts a template may set besides the namespace's `default`
    /// (`--allowed-service-account`).
    pub service_accounts: Vec<String>,
}

impl PodSecurity {
    /// Refuses a pod that breaks the level or names another ServiceAccount,
    /// naming the first field at fault.
    pub fn admit(&self, pod: &Pod) -> Result<(), Refused> {
        if let Some(v) = security::violations(pod, self.level).into_iter().next() {
            return Err(Refused::new(
                format!("pod {}", v.field),
                Rule::PodSecurity {
                    level: self.level.as_str(),
                    problem: v.problem,
                },
            ));
        }
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref());
        if let Some(sa) = sa
            && sa != "default"
            && !self.service_accounts.iter().any(|a| a == sa)
        {
            return Err(Refused::new(
                "pod spec.serviceAccountName",
                Rule::ServiceAccount(sa.to_string()),
            ));
        }
        Ok(())
    }
}

/// What `--sidecar-resources` gives when not set.
pub fn default_sidecar_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("20m".into())),
            ("memory".into(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("256Mi".into()),
        )])),
        ..Default::default()
    }
}

/// Refuses resource names and quantities Kubernetes would refuse, naming
/// the one at fault: a Quantity is a decimal number with an optional
/// suffix (Ki…Ei, n u m k M G T P E, or an exponent).
pub fn check_resources(r: &ResourceRequirements) -> Result<(), Refused> {
    for (part, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, q) in map.iter().flatten() {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(Refused::new(part, Rule::ResourceName(name.clone())));
            }
            if !quantity_ok(&q.0) {
                return Err(Refused::new(
                    format!("{part}.{name}"),
                    Rule::Quantity(q.0.clone()),
                ));
            }
        }
    }
    Ok(())
}

fn quantity_ok(q: &str) -> bool {
    let q = q.strip_prefix(['+', '-']).unwrap_or(q);
    let digits_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(digits_end);
    let num_ok = !num.is_empty() && num != "." && num.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
        })
        .unwrap_or(false);
    num_ok && suffix_ok
}

/// The secrets of one run, kept in its Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTokens {
    pub run: String,
    pub ingest: String,
    pub cache_session: Option<String>,
}

/// Everything one attempt's pod is made of.
#[derive(Debug, Clone)]
pub struct PodPlan<'a> {
    pub namespace: &'a str,
    pub run_name: &'a str,
    pub run_uid: &'a str,
    pub attempt: i32,
    pub simulation_name: &'a str,
    pub simulation_version: &'a str,
    pub image: &'a str,
    pub command: &'a [String],
    pub args: &'a [String],
    pub resources: Option<&'a ResourceRequirements>,
    /// The Simulation's own settings for its container, over the defaults.
    pub security_context: Option<&'a SecurityContext>,
    /// The Simulation's sidecar resources, in place of the operator's.
    pub sidecar_resources: Option<&'a ResourceRequirements>,
    /// The run schema as the sidecar reads it (`{"inputs":…, "outputs":…}`).
    pub schema: &'a Value,
    pub inputs: &'a BTreeMap<String, Value>,
    pub input_hash: &'a str,
    pub cache_key: &'a str,
    pub timeout_seconds: Option<i64>,
    pub sidecar: &'a SidecarSettings,
    /// The SFMDevices the Simulation lists, which its pods may read through
    /// the sidecar's pod-local SFM proxy.
    pub sfm_devices: &'a [SfmDeviceRef],
    /// The systems of record its sidecar reads through (see `sor_wiring`).
    pub sor: &'a sor_wiring::SorWiring,
}

/// An SFMDevice a pod may use, and the Secret key of its upstream
/// `Authorization` header if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfmDeviceRef {
    pub namespace: String,
    pub name: String,
    pub authorization: Option<(String, String)>,
}

/// Where the pod-local SFM proxy listens (SFM's own default port, so code
/// written for SFM works unchanged at http://127.0.0.1:8200).
pub const SFM_LISTEN: &str = "127.0.0.1:8200";

fn short_hash(s: &str, n: usize) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))[..n].to_string()
}

/// `{name}-{hash of uid}`, short enough for a pod name plus an attempt
/// suffix to stay a valid 63-character label value.
fn base_name(run_name: &str, run_uid: &str) -> String {
    let mut name: String = run_name.chars().take(44).collect();
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    format!("{name}-{}", short_hash(run_uid, 6))
}

pub fn pod_name(run_name: &str, run_uid: &str, attempt: i32) -> String {
    format!("{}-{attempt}", base_name(run_name, run_uid))
}

pub fn secret_name(run_name: &str, run_uid: &str) -> String {
    format!("{}-token", base_name(run_name, run_uid))
}

/// The execution id of one attempt: valid as a run-database file name.
pub fn execution_id(namespace: &str, run_name: &str, run_uid: &str, attempt: i32) -> String {
    let mut base: String = format!("{namespace}.{run_name}")
        .chars()
        .take(100)
        .collect();
    while base.ends_with(['-', '.']) {
        base.pop();
    }
    format!("{base}.{}.{attempt}", short_hash(run_uid, 8))
}

/// A label value is at most 63 characters.
pub fn label_value(s: &str) -> String {
    let mut v: String = s.chars().take(63).collect();
    while v.ends_with(['-', '.', '_']) {
        v.pop();
    }
    v
}

pub fn owner_reference(run_name: &str, run_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "simcache.io/v1alpha1".into(),
        kind: "SimulationRun".into(),
        name: run_name.into(),
        uid: run_uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub(crate) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Where the pod's cache API keeps entries: in the shared tier when there
/// is one (reached with the pod's session), else in a SQLite file in the
/// pod. The file holds what is the pod's alone either way; no database
/// URL ever reaches a pod.
fn cache_backend_env(s: &SidecarSettings, sqlite_path: &str) -> Vec<EnvVar> {
    let mut out = vec![
        env(pod_env::CACHE_BACKEND, "sqlite"),
        env(pod_env::CACHE_DB_PATH, sqlite_path),
    ];
    if let Some(url) = &s.shared_tier_url {
        out.push(env(pod_env::SHARED_TIER_URL, url.as_str()));
    }
    out
}

pub(crate) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// A key of a Secret that may be missing (a Secret made by an older
/// operator has no session key).
fn optional_secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    let mut e = secret_env(name, secret, key);
    if let Some(r) = e
        .value_from
        .as_mut()
        .and_then(|f| f.secret_key_ref.as_mut())
    {
        r.optional = Some(true);
    }
    e
}

/// The Secret holding the run's tokens: one for the simulation talking to
/// its sidecar's run API, one for the sidecar uploading to the operator, and
/// with a shared cache the run's session for the cache API.
pub fn token_secret(namespace: &str, run_name: &str, run_uid: &str, tokens: &RunTokens) -> Secret {
    let mut data = BTreeMap::from([
        (TOKEN_KEY_RUN.to_string(), tokens.run.clone()),
        (TOKEN_KEY_INGEST.to_string(), tokens.ingest.clone()),
    ]);
    if let Some(s) = &tokens.cache_session {
        data.insert(TOKEN_KEY_SESSION.to_string(), s.clone());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(run_name, run_uid)),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
                (LABEL_RUN.into(), label_value(run_name)),
            ])),
            owner_references: Some(vec![owner_reference(run_name, run_uid)]),
            ..Default::default()
        },
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn runtime_default() -> Option<SeccompProfile> {
    Some(SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    })
}

/// What Pod Security's `restricted` profile asks of every container. The
/// simulation's image chooses its own (non-root) user.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: runtime_default(),
        ..Default::default()
    }
}

/// The simulation container's: the restricted defaults, each field the
/// Simulation sets taking its place (a relaxation is the Simulation's to
/// make, and its namespace's Pod Security level to allow).
fn simulation_security(own: Option<&SecurityContext>) -> SecurityContext {
    let base = restricted_container();
    match own {
        Some(own) => template::overlay(Some(&base), own).unwrap_or(base),
        None => base,
    }
}

/// The sidecar: restricted, a fixed unprivileged user, read-only root.
fn sidecar_security() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(65532),
        read_only_root_filesystem: Some(true),
        ..restricted_container()
    }
}

/// The pod of one attempt: the simulation container, our sidecar as a
/// native sidecar (init container with `restartPolicy: Always`, so it starts
/// first, serves the whole run, and is stopped with SIGTERM once the
/// simulation ends), and an `emptyDir` both share.
pub fn build_pod(p: &PodPlan) -> Pod {
    let name = pod_name(p.run_name, p.run_uid, p.attempt);
    let secret = secret_name(p.run_name, p.run_uid);
    let exec_id = execution_id(p.namespace, p.run_name, p.run_uid, p.attempt);
    let (sidecar, volumes) = sidecar_container(p, &exec_id, &secret);
    let simulation = simulation_container(p, &exec_id, &secret);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(p.namespace.into()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), MANAGED_BY.into()),
                ("app.kubernetes.io/name".into(), "simcache-run".into()),
                (LABEL_RUN.into(), label_value(p.run_name)),
                (LABEL_SIMULATION.into(), label_value(p.simulation_name)),
                (LABEL_EXECUTION.into(), label_value(&exec_id)),
            ])),
            annotations: Some(BTreeMap::from([
                ("simcache.io/cache-key".into(), p.cache_key.into()),
                ("simcache.io/execution-id".into(), exec_id.clone()),
            ])),
            owner_references: Some(vec![owner_reference(p.run_name, p.run_uid)]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            // Pod Security `restricted` at pod level too, so that containers
            // added later (by a mutating webhook, say) start from it.
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                seccomp_profile: runtime_default(),
                ..Default::default()
            }),
            // The operator enforces the timeout too; this is the node's backstop.
            active_deadline_seconds: p.timeout_seconds.map(|t| t + 60),
            node_selector: (!p.sidecar.node_selector.is_empty())
                .then(|| p.sidecar.node_selector.clone()),
            init_containers: Some(vec![sidecar]),
            containers: vec![simulation],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

/// A file in the volume the two containers share.
fn run_file(f: &str) -> String {
    format!("{RUN_DIR}/{f}")
}

/// The shared run volume, as each container mounts it.
fn run_mount() -> Vec<VolumeMount> {
    vec![VolumeMount {
        name: RUN_VOLUME.into(),
        mount_path: RUN_DIR.into(),
        ..Default::default()
    }]
}

/// What the sidecar reads: the run's identity, schema and inputs, where to
/// upload, its token, its cache backend, its SFM devices and systems of
/// record.
fn sidecar_env(p: &PodPlan, exec_id: &str, secret: &str) -> Vec<EnvVar> {
    let file = run_file;
    let inputs_json = serde_json::to_string(p.inputs).unwrap_or_else(|_| "{}".into());
    let mut sidecar_env = vec![
        // The API is for the simulation beside it: loopback only.
        env(pod_env::CACHE_HOST, "127.0.0.1"),
        env(pod_env::CACHE_PORT, SIDECAR_PORT.to_string()),
        env(pod_env::PROBE_LISTEN, format!("0.0.0.0:{PROBE_PORT}")),
        env(pod_env::EXECUTION_ID, exec_id),
        env(pod_env::SIMULATION_NAME, p.simulation_name),
        env(pod_env::SIMULATION_VERSION, p.simulation_version),
        env(pod_env::RUN_DB_PATH, file("run.db")),
        env(pod_env::SCHEMA, p.schema.to_string()),
        env(pod_env::INPUT_VALUES, &inputs_json),
        env(pod_env::INPUTS, file("inputs.json")),
        env(pod_env::OUTPUTS, file("outputs.json")),
        env(pod_env::CACHE_KEY, p.cache_key),
        env(pod_env::INPUT_HASH, p.input_hash),
        env(pod_env::IMAGE, p.image),
        env(
            pod_env::INGEST_URL,
            format!(
                "{}/ingest/{exec_id}",
                p.sidecar.operator_url.trim_end_matches('/')
            ),
        ),
        secret_env(pod_env::RUN_TOKEN, secret, TOKEN_KEY_RUN),
        secret_env(pod_env::INGEST_TOKEN, secret, TOKEN_KEY_INGEST),
    ];
    if let Some((_, digest)) = p.image.split_once('@') {
        sidecar_env.push(env(pod_env::IMAGE_DIGEST, digest));
    }
    sidecar_env.extend(cache_backend_env(p.sidecar, &file("cache.db")));
    // The sidecar admits the simulation with the pod's session and presents
    // it to the shared tier.
    sidecar_env.push(optional_secret_env(
        pod_env::POD_SESSION,
        secret,
        TOKEN_KEY_SESSION,
    ));
    let settings = crate::pod_settings::PodSettings {
        systems_of_record: p.sor.settings.clone(),
        sfm_devices: p
            .sfm_devices
            .iter()
            .map(|d| crate::pod_settings::DeviceRef {
                namespace: d.namespace.clone(),
                name: d.name.clone(),
            })
            .collect(),
    };
    // Always given, even empty: with a document the sidecar takes systems
    // of record and devices from nothing else.
    sidecar_env.push(env(pod_env::POD_SETTINGS, settings.to_json()));
    if !p.sfm_devices.is_empty() {
        sidecar_env.push(env(pod_env::SFM_LISTEN, SFM_LISTEN));
    }
    // With the shared tier, devices' upstream credentials stay there.
    if p.sidecar.shared_tier_url.is_none() {
        for d in p.sfm_devices {
            if let Some((secret, key)) = &d.authorization {
                sidecar_env.push(secret_env(
                    &pod_env::sfm_authorization_env(&d.namespace, &d.name),
                    secret,
                    key,
                ));
            }
        }
    }
    sidecar_env.extend(p.sor.sidecar_env.iter().cloned());
    sidecar_env
}

/// The sidecar container and the pod's volumes (the run volume, the systems
/// of record's, the cache database's TLS files).
fn sidecar_container(p: &PodPlan, exec_id: &str, secret: &str) -> (Container, Vec<Volume>) {
    let sidecar_env = sidecar_env(p, exec_id, secret);
    let mount = run_mount();
    let mut sidecar_mounts = mount.clone();
    sidecar_mounts.extend(p.sor.sidecar_mounts.iter().cloned());
    let mut volumes = vec![Volume {
        name: RUN_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    volumes.extend(p.sor.volumes.iter().cloned());
    let sidecar = Container {
        name: SIDECAR_CONTAINER.into(),
        image: Some(p.sidecar.image.clone()),
        image_pull_policy: p.sidecar.image_pull_policy.clone(),
        args: Some(vec!["serve".into()]),
        restart_policy: Some("Always".into()),
        env: Some(sidecar_env),
        // Only the probe port is reachable from outside the pod.
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: PROBE_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        startup_probe: p.sidecar.startup_probe.then(|| Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".into()),
                port: IntOrString::Int(PROBE_PORT),
                ..Default::default()
            }),
            period_seconds: Some(1),
            failure_threshold: Some(60),
            ..Default::default()
        }),
        resources: Some(p.sidecar_resources.unwrap_or(&p.sidecar.resources).clone()),
        security_context: Some(sidecar_security()),
        volume_mounts: Some(sidecar_mounts),
        ..Default::default()
    };
    (sidecar, volumes)
}

/// The simulation container: the author's image and command, the inputs as
/// variables, where its sidecar and SFM proxy listen, its run token.
fn simulation_container(p: &PodPlan, exec_id: &str, secret: &str) -> Container {
    let file = run_file;
    let mount = run_mount();
    let mut sim_env = vec![
        env(pod_env::URL, format!("http://127.0.0.1:{SIDECAR_PORT}")),
        secret_env(pod_env::RUN_TOKEN, secret, TOKEN_KEY_RUN),
        env(pod_env::EXECUTION_ID, exec_id),
        env(pod_env::INPUTS, file("inputs.json")),
        env(pod_env::OUTPUTS, file("outputs.json")),
    ];
    if !p.sfm_devices.is_empty() {
        sim_env.push(env(pod_env::SFM_URL, format!("http://{SFM_LISTEN}")));
    }
    // The run's session at its sidecar, as sim2l's CacheClient sends it.
    sim_env.push(optional_secret_env(
        pod_env::SESSION_ID,
        secret,
        TOKEN_KEY_SESSION,
    ));
    sim_env.extend(
        p.inputs
            .iter()
            .map(|(k, v)| env(&input_env_name(k), input_env_value(v))),
    );
    Container {
        name: SIMULATION_CONTAINER.into(),
        image: Some(p.image.into()),
        command: (!p.command.is_empty()).then(|| p.command.to_vec()),
        args: (!p.args.is_empty()).then(|| p.args.to_vec()),
        env: Some(sim_env),
        resources: p.resources.cloned(),
        volume_mounts: Some(mount),
        security_context: Some(simulation_security(p.security_context)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_SOR: crate::pod::sor_wiring::SorWiring = crate::pod::sor_wiring::SorWiring {
        settings: Vec::new(),
        sidecar_env: Vec::new(),
        volumes: Vec::new(),
        sidecar_mounts: Vec::new(),
    };
    use serde_json::json;

    fn plan<'a>(
        inputs: &'a BTreeMap<String, Value>,
        schema: &'a Value,
        s: &'a SidecarSettings,
        cmd: &'a [String],
    ) -> PodPlan<'a> {
        PodPlan {
            namespace: "lab",
            run_name: "thermal-350k",
            run_uid: "0a1b2c3d-uid",
            attempt: 1,
            simulation_name: "thermal",
            simulation_version: "1.0.0",
            image: "ghcr.io/x/thermal@sha256:abc",
            command: cmd,
            args: &[],
            resources: None,
            security_context: None,
            sidecar_resources: None,
            schema,
            inputs,
            input_hash: "h",
            cache_key: "thermal/1.0.0/h",
            timeout_seconds: Some(600),
            sidecar: s,
            sfm_devices: &[],
            sor: &NO_SOR,
        }
    }

    /// The operator's pod settings as a plain install gives them.
    fn test_sidecar(startup_probe: bool) -> SidecarSettings {
        SidecarSettings {
            image: "sidecar:1".into(),
            image_pull_policy: None,
            operator_url: "http://op:8080".into(),
            startup_probe,
            node_selector: BTreeMap::new(),
            shared_tier_url: None,
            resources: default_sidecar_resources(),
            pod_security: Default::default(),
        }
    }

    fn env_of<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
        c.env.as_ref()?.iter().find(|e| e.name == name)
    }

    #[test]
    fn sidecar_resources_come_from_the_operator_or_the_simulation_and_are_checked() {
        let (inputs, schema) = (BTreeMap::new(), json!({}));
        let mut s = SidecarSettings {
            image: "sidecar:1".into(),
            image_pull_policy: None,
            operator_url: "http://op:8080".into(),
            startup_probe: false,
            node_selector: BTreeMap::new(),
            shared_tier_url: None,
            resources: default_sidecar_resources(),
            pod_security: Default::default(),
        };
        let sidecar_of = |p: &PodPlan| {
            build_pod(p).spec.unwrap().init_containers.unwrap()[0]
                .resources
                .clone()
                .unwrap()
        };
        let p = plan(&inputs, &schema, &s, &[]);
        assert_eq!(sidecar_of(&p), default_sidecar_resources());
        let big: ResourceRequirements = serde_json::from_value(
            json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}),
        )
        .unwrap();
        s.resources = big.clone();
        let mut p = plan(&inputs, &schema, &s, &[]);
        assert_eq!(sidecar_of(&p), big);
        let own: ResourceRequirements =
            serde_json::from_value(json!({"requests": {"cpu": "1"}})).unwrap();
        p.sidecar_resources = Some(&own);
        assert_eq!(
            sidecar_of(&p),
            own,
            "the Simulation's take the operator's place"
        );
        // The simulation container's own are untouched by either.
        assert_eq!(build_pod(&p).spec.unwrap().containers[0].resources, None);

        for ok in ["20m", "1", "1.5", "64Mi", "2Gi", "1e3", "+1k", ".5"] {
            assert!(quantity_ok(ok), "{ok}");
        }
        for bad in ["", "Mi", "1.2.3", "20 m", "1MB", "1e", "lots"] {
            assert!(!quantity_ok(bad), "{bad}");
        }
        let wrong: ResourceRequirements =
            serde_json::from_value(json!({"limits": {"memory": "1MB"}})).unwrap();
        assert_eq!(
            check_resources(&wrong).unwrap_err().to_string(),
            "limits.memory: `1MB` is not a quantity (e.g. 250m, 1.5, 64Mi, 2Gi)"
        );
    }

    #[test]
    fn the_sidecar_api_is_loopback_only_and_probes_have_their_own_port() {
        let (inputs, schema) = (BTreeMap::new(), json!({}));
        let s = test_sidecar(true);
        let pod = build_pod(&plan(&inputs, &schema, &s, &[]));
        let spec = pod.spec.unwrap();
        let side = &spec.init_containers.unwrap()[0];
        let v = |n: &str| env_of(side, n).and_then(|e| e.value.clone());
        assert_eq!(v(pod_env::CACHE_HOST).as_deref(), Some("127.0.0.1"));
        assert_eq!(
            v(pod_env::PROBE_LISTEN),
            Some(format!("0.0.0.0:{PROBE_PORT}"))
        );
        let ports: Vec<_> = side
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [(Some("metrics"), PROBE_PORT)],
            "only the probe port is declared"
        );
        let probe = side
            .startup_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.port, IntOrString::Int(PROBE_PORT));
        assert_eq!(
            env_of(&spec.containers[0], pod_env::URL).and_then(|e| e.value.clone()),
            Some(format!("http://127.0.0.1:{SIDECAR_PORT}"))
        );
    }

    #[test]
    fn every_generated_pod_meets_pod_security_restricted() {
        use crate::pod::security::restricted_violations;
        use crate::pod::sor_wiring::{SorRef, wire};
        use simcache_crds::sor::{DirectoryLocation, SystemOfRecordSpec};
        let (inputs, schema) = (
            serde_json::from_value::<BTreeMap<String, Value>>(json!({"t": 1})).unwrap(),
            json!({}),
        );
        let plain = SidecarSettings {
            image: "sidecar:1".into(),
            image_pull_policy: None,
            operator_url: "http://op:8080".into(),
            startup_probe: true,
            node_selector: BTreeMap::new(),
            shared_tier_url: None,
            resources: default_sidecar_resources(),
            pod_security: Default::default(),
        };
        let shared = SidecarSettings {
            shared_tier_url: Some("http://simcache-shared.simcache:8300".into()),
            ..plain.clone()
        };
        let devices = [SfmDeviceRef {
            namespace: "lab".into(),
            name: "unit-7".into(),
            authorization: Some(("sfm-auth".into(), "authorization".into())),
        }];
        let sor = wire(&[SorRef {
            name: "meshes".into(),
            spec: SystemOfRecordSpec {
                s3: None,
                directory: Some(DirectoryLocation {
                    claim_name: "mesh-pvc".into(),
                    sub_path: String::new(),
                }),
                cache: Default::default(),
                functions: vec![],
            },
        }])
        .unwrap();
        let cmd = ["run".to_string()];
        let mut variants = Vec::new();
        for s in [&plain, &shared] {
            let mut p = plan(&inputs, &schema, s, &cmd);
            variants.push(build_pod(&p));
            p.sfm_devices = &devices;
            p.sor = &sor;
            variants.push(build_pod(&p));
        }
        for pod in &variants {
            assert_eq!(restricted_violations(pod), Vec::<String>::new());
        }
        // A Simulation may set its own container's settings: a user id
        // keeps the profile, running as root relaxes it (and says where).
        let keeps = SecurityContext {
            run_as_user: Some(1000),
            read_only_root_filesystem: Some(true),
            ..Default::default()
        };
        let mut p = plan(&inputs, &schema, &plain, &cmd);
        p.security_context = Some(&keeps);
        let pod = build_pod(&p);
        assert_eq!(restricted_violations(&pod), Vec::<String>::new());
        let sc = pod.spec.as_ref().unwrap().containers[0]
            .security_context
            .clone()
            .unwrap();
        assert_eq!(
            (sc.run_as_user, sc.allow_privilege_escalation),
            (Some(1000), Some(false))
        );
        let root = SecurityContext {
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..Default::default()
        };
        p.security_context = Some(&root);
        let pod = build_pod(&p);
        let v = restricted_violations(&pod);
        assert!(
            v.iter()
                .all(|m| m.starts_with("spec.containers[simulation]"))
                && v.len() == 2,
            "only the simulation's own container is relaxed: {v:?}"
        );
        // The checker is not blind: a hostPath volume in the same pod fails.
        let mut pod = variants[0].clone();
        pod.spec
            .as_mut()
            .unwrap()
            .volumes
            .as_mut()
            .unwrap()
            .push(Volume {
                name: "host".into(),
                host_path: Some(Default::default()),
                ..Default::default()
            });
        assert_eq!(restricted_violations(&pod).len(), 1);
    }

    #[test]
    fn sfm_devices_get_a_loopback_proxy_in_the_sidecar_and_its_url_in_the_simulation() {
        let (inputs, schema) = (BTreeMap::new(), json!({}));
        let s = test_sidecar(false);
        let devices = [
            SfmDeviceRef {
                namespace: "lab".into(),
                name: "unit-7".into(),
                authorization: Some(("sfm-auth".into(), "authorization".into())),
            },
            SfmDeviceRef {
                namespace: "lab".into(),
                name: "unit-8".into(),
                authorization: None,
            },
        ];
        let mut p = plan(&inputs, &schema, &s, &[]);
        let pod = build_pod(&p);
        let spec = pod.spec.as_ref().unwrap();
        let side = &spec.init_containers.as_ref().unwrap()[0];
        assert!(
            env_of(side, pod_env::SFM_LISTEN).is_none(),
            "no devices, no proxy"
        );
        assert!(env_of(&spec.containers[0], pod_env::SFM_URL).is_none());
        p.sfm_devices = &devices;
        let pod = build_pod(&p);
        let spec = pod.spec.as_ref().unwrap();
        let side = &spec.init_containers.as_ref().unwrap()[0];
        let v = |c: &Container, n: &str| env_of(c, n).and_then(|e| e.value.clone());
        assert_eq!(
            v(side, pod_env::SFM_LISTEN).as_deref(),
            Some("127.0.0.1:8200")
        );
        assert!(v(side, pod_env::SFM_DEVICES).is_none(), "no delimited list");
        let settings =
            crate::pod_settings::PodSettings::parse(&v(side, pod_env::POD_SETTINGS).unwrap())
                .unwrap();
        let names: Vec<_> = settings
            .sfm_devices
            .iter()
            .map(|d| (d.namespace.as_str(), d.name.as_str()))
            .collect();
        assert_eq!(names, [("lab", "unit-7"), ("lab", "unit-8")]);
        assert_eq!(
            v(&spec.containers[0], pod_env::SFM_URL).as_deref(),
            Some("http://127.0.0.1:8200")
        );
        // The upstream header comes from the Secret by reference, never as a value.
        let auth = env_of(side, "SIMCACHE_SFM_AUTHORIZATION_LAB_UNIT_7").unwrap();
        assert!(auth.value.is_none());
        let r = auth
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("sfm-auth", "authorization")
        );
        assert!(env_of(side, "SIMCACHE_SFM_AUTHORIZATION_LAB_UNIT_8").is_none());
    }

    #[test]
    fn names_are_deterministic_and_valid() {
        let long = "r".repeat(250);
        for (name, uid) in [("thermal-350k", "u1"), (long.as_str(), "u2")] {
            let p = pod_name(name, uid, 3);
            assert_eq!(p, pod_name(name, uid, 3));
            assert!(p.len() <= 63, "{p}");
            assert!(p.ends_with("-3"));
            let e = execution_id("ns", name, uid, 3);
            simcache_rundb::validate_execution_id(&e).unwrap();
        }
        assert_ne!(pod_name("a", "u1", 1), pod_name("a", "u2", 1));
        assert_ne!(pod_name("a", "u1", 1), pod_name("a", "u1", 2));
        assert_ne!(
            execution_id("ns", "a", "u1", 1),
            execution_id("ns", "a", "u1", 2)
        );
    }

    #[test]
    fn the_sidecar_keeps_the_cache_in_the_shared_tier_with_the_pods_session_only() {
        let inputs = BTreeMap::new();
        let schema = json!({"inputs": {}, "outputs": {}});
        let cmd = vec!["true".to_string()];
        let sidecar_env = |tier: Option<&str>| {
            let s = SidecarSettings {
                image: "sidecar".into(),
                image_pull_policy: None,
                operator_url: "http://op:8080".into(),
                startup_probe: false,
                node_selector: BTreeMap::new(),
                shared_tier_url: tier.map(str::to_string),
                resources: default_sidecar_resources(),
                pod_security: Default::default(),
            };
            let pod = build_pod(&plan(&inputs, &schema, &s, &cmd));
            let spec = pod.spec.unwrap();
            let by_name = |c: Container| {
                c.env
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.name.clone(), e))
                    .collect::<BTreeMap<_, _>>()
            };
            let init = spec.init_containers.unwrap().remove(0);
            (by_name(init), by_name(spec.containers[0].clone()))
        };

        let secret_ref = |e: &EnvVar| {
            e.value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.clone())
                .unwrap()
        };
        let (own, own_sim) = sidecar_env(None);
        // Its own cache: the simulation and its sidecar both get the run's
        // pod session from the run's Secret, by reference.
        let (to_sim, to_sidecar) = (
            secret_ref(&own_sim["SIMCACHE_SESSION_ID"]),
            secret_ref(&own["SIMCACHE_POD_SESSION"]),
        );
        assert_eq!(to_sim, to_sidecar);
        assert_eq!(to_sim.key, TOKEN_KEY_SESSION);
        assert_eq!(
            own["SIMCACHE_CACHE_BACKEND"].value.as_deref(),
            Some("sqlite")
        );
        assert_eq!(
            own["SIMCACHE_CACHE_DB_PATH"].value.as_deref(),
            Some("/simcache/run/cache.db")
        );
        assert!(!own.contains_key("SIMCACHE_CACHE_DB_URL"));

        assert!(!own.contains_key("SIMCACHE_SHARED_TIER_URL"));

        let tier = "http://simcache-shared.simcache:8300";
        let (shared, shared_sim) = sidecar_env(Some(tier));
        assert_eq!(
            shared["SIMCACHE_SHARED_TIER_URL"].value.as_deref(),
            Some(tier)
        );
        // The sidecar presents the run's session to the tier; the simulation
        // presents the same one to its sidecar. Both by reference.
        let session = secret_ref(&shared_sim["SIMCACHE_SESSION_ID"]);
        assert_eq!(
            (session.name.as_str(), session.key.as_str()),
            (
                secret_name("thermal-350k", "0a1b2c3d-uid").as_str(),
                TOKEN_KEY_SESSION
            )
        );
        assert_eq!(secret_ref(&shared["SIMCACHE_POD_SESSION"]), session);
        assert_eq!(session.optional, Some(true));
        // No database reaches a pod: its own file, never a URL or a pool.
        for (sidecar, sim) in [(&own, &own_sim), (&shared, &shared_sim)] {
            assert_eq!(
                sidecar["SIMCACHE_CACHE_BACKEND"].value.as_deref(),
                Some("sqlite")
            );
            for name in [
                "SIMCACHE_CACHE_DB_URL",
                "SIMCACHE_DB_POOL_SIZE",
                "DATABASE_URL",
            ] {
                assert!(
                    !sidecar.contains_key(name) && !sim.contains_key(name),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn the_pod_has_a_native_sidecar_a_shared_volume_and_the_inputs() {
        let inputs: BTreeMap<String, Value> =
            serde_json::from_value(json!({"temperature": 350, "material": "copper"})).unwrap();
        let schema = json!({"inputs": {}, "outputs": {}});
        let s = SidecarSettings {
            image: "ghcr.io/simcache/sidecar:0.1.0".into(),
            image_pull_policy: None,
            operator_url: "http://op.simcache:8080/".into(),
            startup_probe: true,
            node_selector: BTreeMap::from([("pool".to_string(), "sims".to_string())]),
            shared_tier_url: None,
            resources: default_sidecar_resources(),
            pod_security: Default::default(),
        };
        let cmd = vec!["python3".to_string(), "/app/t.py".to_string()];
        let pod = build_pod(&plan(&inputs, &schema, &s, &cmd));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.name, SIDECAR_CONTAINER);
        assert_eq!(init.restart_policy.as_deref(), Some("Always"));
        assert!(init.startup_probe.is_some());
        let sc = init.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let main = &spec.containers[0];
        assert_eq!(main.command.as_ref().unwrap(), &cmd);
        let var = |c: &Container, n: &str| {
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .find(|e| e.name == n)
                .cloned()
        };
        assert_eq!(
            var(main, "SIMCACHE_INPUT_MATERIAL")
                .unwrap()
                .value
                .as_deref(),
            Some("copper")
        );
        assert_eq!(
            var(main, "SIMCACHE_INPUT_TEMPERATURE")
                .unwrap()
                .value
                .as_deref(),
            Some("350")
        );
        // Tokens come from the Secret, never inline; the simulation does not
        // get the ingest token.
        let tok = var(main, "SIMCACHE_RUN_TOKEN").unwrap();
        assert!(tok.value.is_none() && tok.value_from.is_some());
        assert!(var(main, "SIMCACHE_INGEST_TOKEN").is_none());
        let exec = execution_id("lab", "thermal-350k", "0a1b2c3d-uid", 1);
        assert_eq!(
            var(init, "SIMCACHE_INGEST_URL").unwrap().value.unwrap(),
            format!("http://op.simcache:8080/ingest/{exec}")
        );
        assert_eq!(
            var(init, "SIMCACHE_IMAGE_DIGEST").unwrap().value.as_deref(),
            Some("sha256:abc")
        );
        for c in [init, main] {
            assert_eq!(
                c.volume_mounts.as_ref().unwrap()[0].mount_path,
                RUN_DIR,
                "{}",
                c.name
            );
        }
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("SimulationRun", Some(true))
        );
        assert_eq!(spec.active_deadline_seconds, Some(660));
        assert_eq!(spec.node_selector.as_ref().unwrap()["pool"], "sims");
    }
}

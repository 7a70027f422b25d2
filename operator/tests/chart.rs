//! The Helm chart with real Helm (Helm's Go library through helm-sdkpy):
//! lint, render with default and non-default values by installing into the
//! test API server (which applies every object), parse every rendered object
//! into its `k8s-openapi` type, re-apply the manifest with `kubectl`, check
//! that values.schema.json refuses bad values, and that every metric the
//! dashboard and the alerts query is one the binaries export.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test's panic is its failure

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use simcache_testkit::ServerProcess;
use simcache_testkit::helm::{chart_dir, helm};
use simcache_testkit::k8s::{Namespace, OperatorLaunch, cluster, workspace_bin};

const OPERATOR: &str = env!("CARGO_BIN_EXE_simcache-operator");

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Installs the chart into `ns` and returns every rendered object.
/// The chart as the test API server (1.20, below its kubeVersion) takes it,
/// copied once for this test binary.
fn test_chart() -> std::path::PathBuf {
    static COPY: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    COPY.get_or_init(simcache_testkit::helm::chart_for_test_apiserver)
        .1
        .clone()
}

fn render(ns: &Namespace, release: &str, values: Value) -> Vec<Value> {
    let c = cluster();
    let rel = helm()
        .install(&c.kubeconfig, &ns.name, release, &test_chart(), &values)
        .unwrap_or_else(|e| panic!("helm install {release} with {values}: {}", e.0));
    let manifest = rel["manifest"]
        .as_str()
        .unwrap_or_else(|| panic!("no manifest in the release: {rel}"));
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(manifest)
        .map(|d| Value::deserialize(d).expect("the rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect();
    // kubectl accepts the same manifest (Helm has applied it already, so
    // kubectl finds every object and leaves or updates it), each object in
    // its own namespace (Roles may be in the watched ones).
    let mut by_ns: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for d in &docs {
        let target = d["metadata"]["namespace"].as_str().unwrap_or(&ns.name);
        by_ns.entry(target.to_string()).or_default().push(d);
    }
    for (target, group) in by_ns {
        let text: String = group
            .iter()
            .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
            .collect();
        let out = c.kubectl_stdin(&["apply", "-n", &target, "-f", "-"], Some(&text));
        assert!(
            out.status.success(),
            "kubectl apply of the rendered chart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    docs
}

/// Parses `doc` as `T` and back: a field Kubernetes does not know (a typo
/// in a template) is dropped by the typed round trip and shows as a diff.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value) -> T {
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!(
            "{} {}: not a valid object: {e}\n{doc:#}",
            doc["kind"], doc["metadata"]["name"]
        )
    });
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(
        back, *doc,
        "{} {} has fields its Kubernetes type does not know",
        doc["kind"], doc["metadata"]["name"]
    );
    t
}

/// Every rendered object, typed: core kinds through k8s-openapi, the
/// Prometheus Operator's kinds by structure (k8s-openapi has no types for
/// them). Returns the kinds seen.
fn check_all_typed(docs: &[Value]) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for d in docs {
        let api = d["apiVersion"].as_str().unwrap_or_default();
        let kind = d["kind"].as_str().unwrap_or_default();
        match (api, kind) {
            ("apps/v1", "Deployment") => drop(typed::<Deployment>(d)),
            ("apps/v1", "StatefulSet") => drop(typed::<StatefulSet>(d)),
            ("v1", "Service") => drop(typed::<Service>(d)),
            ("v1", "ServiceAccount") => drop(typed::<ServiceAccount>(d)),
            ("v1", "Secret") => drop(typed::<Secret>(d)),
            ("v1", "ConfigMap") => drop(typed::<ConfigMap>(d)),
            ("v1", "PersistentVolumeClaim") => drop(typed::<PersistentVolumeClaim>(d)),
            ("rbac.authorization.k8s.io/v1", "Role") => drop(typed::<Role>(d)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => drop(typed::<RoleBinding>(d)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop(typed::<ClusterRole>(d)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                drop(typed::<ClusterRoleBinding>(d))
            }
            ("policy/v1", "PodDisruptionBudget") => drop(typed::<PodDisruptionBudget>(d)),
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                drop(typed::<k8s_openapi::api::networking::v1::NetworkPolicy>(d))
            }
            // API servers before 1.21 get policy/v1beta1, whose spec is the
            // same as v1's (k8s-openapi only has v1).
            ("policy/v1beta1", "PodDisruptionBudget") => {
                let mut v1 = d.clone();
                v1["apiVersion"] = json!("policy/v1");
                drop(typed::<PodDisruptionBudget>(&v1))
            }
            ("monitoring.coreos.com/v1", "ServiceMonitor" | "PodMonitor" | "PrometheusRule") => {}
            _ => panic!("the chart renders {api} {kind}, which this test does not check"),
        }
        kinds.insert(kind.to_string());
    }
    kinds
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one `kind` of the operator itself (the shared tier's Deployment
/// and Service are looked at on their own).
fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let all: Vec<&Value> = find(docs, kind)
        .into_iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] != "shared-tier")
        .collect();
    assert_eq!(all.len(), 1, "expected one {kind}, got {}", all.len());
    all[0]
}

fn env_of(dep: &Deployment) -> BTreeMap<String, Value> {
    let c = &dep
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), _) => json!(v),
                (None, Some(f)) => serde_json::to_value(f).unwrap(),
                _ => Value::Null,
            };
            (e.name.clone(), v)
        })
        .collect()
}

#[test]
fn the_chart_lints_clean_with_real_helm() {
    let lint = helm().lint(&chart_dir());
    assert_eq!(lint["TotalChartsLinted"], 1, "{lint:#}");
    assert!(lint["Errors"].is_null(), "lint errors: {lint:#}");
    let serious: Vec<&Value> = lint["Messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Severity"].as_i64().unwrap_or(0) >= 2)
        .collect();
    assert!(serious.is_empty(), "lint warnings or errors: {serious:#?}");
}

#[test]
fn default_values_render_a_secure_two_replica_operator() {
    let c = cluster();
    c.install_crds();
    let ns = c.namespace("chart-default");
    // A release name unique to the namespace: the ClusterRole is cluster-wide.
    let rel = format!("d{}", &ns.name[ns.name.len() - 6..]);
    let full = format!("{rel}-simcache");
    let docs = render(
        &ns,
        &rel,
        json!({"database": {"existingSecret": "simcache-db"}}),
    );
    let kinds = check_all_typed(&docs);
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .into_iter()
        .map(String::from)
        .collect::<BTreeSet<_>>()
    );

    let dep: Deployment = typed(one(&docs, "Deployment"));
    let spec = dep.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some(full.as_str()));
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    let ctr = &pod.containers[0];
    assert_eq!(
        ctr.image.as_deref(),
        Some("ghcr.io/simcache/operator:0.1.0")
    );
    let sc = ctr.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_string()])
    );
    assert!(ctr.resources.as_ref().unwrap().requests.is_some());
    assert_eq!(
        ctr.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    let env = env_of(&dep);
    assert_eq!(
        env["SIMCACHE_DB_URL"]["secretKeyRef"],
        json!({"name": "simcache-db", "key": "url"})
    );
    assert_eq!(
        env["SIMCACHE_SIDECAR_IMAGE"],
        "ghcr.io/simcache/sidecar:0.1.0"
    );
    assert_eq!(
        env["SIMCACHE_OPERATOR_URL"],
        json!(format!("http://{full}.{}.svc:8080", ns.name))
    );
    assert_eq!(env["POD_NAME"]["fieldRef"]["fieldPath"], "metadata.name");
    assert!(!env.contains_key("SIMCACHE_NO_LEADER_ELECTION"));
    assert_eq!(env["SIMCACHE_RUN_TTL_SECONDS_AFTER_FINISHED"], "3600");
    // Pods keep the cache in the shared tier, on by default.
    assert_eq!(
        env["SIMCACHE_SHARED_TIER_URL"],
        json!(format!("http://{full}-shared.{}.svc:8300", ns.name))
    );
    // The operator's flags exist: the chart only sets documented ones.
    let help = std::process::Command::new(OPERATOR)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for name in env.keys().filter(|k| k.starts_with("SIMCACHE_")) {
        assert!(
            help.contains(&format!("env: {name}")) || name == "SIMCACHE_ADMIN_PASSWORD",
            "the chart sets {name}, which `simcache-operator serve` does not read"
        );
    }
    for a in ctr.args.iter().flatten() {
        let flag = a.split('=').next().unwrap();
        assert!(
            !flag.starts_with("--") || help.contains(flag),
            "the chart passes {flag}, which `simcache-operator serve` does not know"
        );
    }

    let svc: Service = typed(one(&docs, "Service"));
    let port = &svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    assert_eq!(
        svc.spec.as_ref().unwrap().selector,
        spec.selector.match_labels,
        "the Service selects the operator pods"
    );
    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let cm: ConfigMap = typed(one(&docs, "ConfigMap"));
    assert_eq!(
        cm.metadata.labels.as_ref().unwrap()["grafana_dashboard"],
        "1"
    );
    let dash: Value =
        serde_json::from_str(&cm.data.as_ref().unwrap()["simcache.json"]).expect("dashboard JSON");
    assert_eq!(dash["title"], "simcache");
    // Stat panels that are alarms when 0: red at 0, green from 1.
    for title in ["Leader", "Database reachable"] {
        let p = dash["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("panel {title}"));
        let steps = &p["fieldConfig"]["defaults"]["thresholds"]["steps"];
        assert_eq!(
            (
                steps[0]["color"].as_str(),
                &steps[1]["color"],
                &steps[1]["value"]
            ),
            (Some("red"), &json!("green"), &json!(1)),
            "{title}: {steps}"
        );
        assert_eq!(p["fieldConfig"]["defaults"]["color"]["mode"], "thresholds");
    }
    assert!(
        dash["panels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["title"] == "Runs now, by phase"
                && p["targets"][0]["expr"]
                    .as_str()
                    .unwrap()
                    .contains("simcache_operator_runs{")),
        "a runs-by-phase panel"
    );
    assert!(find(&docs, "ServiceMonitor").is_empty());
    assert!(
        find(&docs, "StatefulSet").is_empty(),
        "no trial Postgres by default"
    );

    // The objects are in the API server.
    let objects = [
        format!("deployment/{full}"),
        format!("service/{full}"),
        format!("serviceaccount/{full}"),
        format!("pvc/{full}-runs"),
        format!("configmap/{full}-dashboard"),
        format!("clusterrole/{full}"),
    ];
    let mut args = vec!["get"];
    args.extend(objects.iter().map(String::as_str));
    args.extend(["-n", &ns.name, "-o", "name"]);
    let out = c.kubectl(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
    helm().uninstall(&c.kubeconfig, &ns.name, &rel);
}

fn install_prometheus_operator_crds() {
    cluster().apply_crds(
        &repo("testkit/k8s/prometheus-operator-crds.yaml"),
        &[
            "servicemonitors.monitoring.coreos.com",
            "podmonitors.monitoring.coreos.com",
            "prometheusrules.monitoring.coreos.com",
        ],
    );
}

fn everything_on(ns: &str) -> Value {
    json!({
        "replicaCount": 1,
        "image": {"digest": format!("sha256:{}", "a".repeat(64))},
        "sidecar": {"image": {"tag": "9.9.9", "pullPolicy": "Always"},
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}},
                    "nodeSelector": {"pool": "compute", "zone": "b"}},
        "operator": {"watchNamespace": ns, "logFormat": "text", "logLevel": "debug",
                     "leaderElection": {"enabled": false, "leaseSeconds": 15},
                     "adminPassword": {"existingSecret": "admin-pw", "key": "pw"},
                     "trustedProxies": ["10.0.0.1", "10.0.0.2"],
                     "extraArgs": ["--reconcile-concurrency=64"],
                     "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.lab:3128"}],
                     "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
                     "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": true}],
                     "runTtlSecondsAfterFinished": 0},
        "postgresql": {"enabled": true},
        "database": {"tlsSecret": "pg-ca"},
        "runStorage": {"existingClaim": "shared-runs"},
        "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"},
                           "honorLabels": true,
                           "relabelings": [{"targetLabel": "cluster", "replacement": "lab-1"}],
                           "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}]},
        "podMonitor": {"enabled": true,
                       "relabelings": [{"targetLabel": "cluster", "replacement": "lab-1"}]},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "simcache"}}}],
        "prometheusRule": {"enabled": true},
        "grafanaDashboard": {"enabled": false},
        "podAnnotations": {"lab.example/owner": "materials"},
        "podLabels": {"lab.example/tier": "control"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "control", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    })
}

#[test]
fn non_default_values_render_monitoring_a_trial_database_and_namespaced_rbac() {
    let c = cluster();
    c.install_crds();
    install_prometheus_operator_crds();
    let ns = c.namespace("chart-all");
    let docs = render(&ns, "full", everything_on(&ns.name));
    let kinds = check_all_typed(&docs);
    for k in [
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
        "StatefulSet",
        "Role",
    ] {
        assert!(kinds.contains(k), "{k} missing from {kinds:?}");
    }
    for k in [
        "ClusterRole",
        "PodDisruptionBudget",
        "ConfigMap",
        "PersistentVolumeClaim",
    ] {
        assert!(!kinds.contains(k), "{k} rendered although switched off");
    }
    let dep: Deployment = typed(one(&docs, "Deployment"));
    let pod = dep.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some(format!("ghcr.io/simcache/operator@sha256:{}", "a".repeat(64)).as_str())
    );
    let claim = pod.volumes.as_ref().unwrap()[0]
        .persistent_volume_claim
        .as_ref()
        .unwrap();
    assert_eq!(claim.claim_name, "shared-runs");
    // database.tlsSecret: mounted read-only, owner-only, for sslrootcert=.
    let tls = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "pg-tls")
        .and_then(|v| v.secret.as_ref())
        .expect("the pg-tls volume");
    assert_eq!(
        (tls.secret_name.as_deref(), tls.default_mode),
        (Some("pg-ca"), Some(0o400))
    );
    let mount = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "pg-tls")
        .expect("the pg-tls mount");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/etc/simcache/pg-tls", Some(true))
    );
    let env = env_of(&dep);
    assert_eq!(
        env["SIMCACHE_SIDECAR_IMAGE"],
        "ghcr.io/simcache/sidecar:9.9.9"
    );
    assert_eq!(env["SIMCACHE_SIDECAR_IMAGE_PULL_POLICY"], "Always");
    assert_eq!(env["SIMCACHE_POD_NODE_SELECTOR"], "pool=compute,zone=b");
    // The operator parses it as its --sidecar-resources would; Helm merges
    // the keys given with the defaults.
    let res: k8s_openapi::api::core::v1::ResourceRequirements =
        serde_json::from_str(env["SIMCACHE_SIDECAR_RESOURCES"].as_str().unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(res).unwrap(),
        json!({"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"memory": "1Gi"}})
    );
    assert_eq!(env["SIMCACHE_WATCH_NAMESPACE"], json!(ns.name));
    assert_eq!(env["SIMCACHE_NO_LEADER_ELECTION"], "true");
    assert_eq!(env["SIMCACHE_TRUSTED_PROXIES"], "10.0.0.1,10.0.0.2");
    assert_eq!(env["SIMCACHE_RUN_TTL_SECONDS_AFTER_FINISHED"], "0");
    assert_eq!(
        env["SIMCACHE_ADMIN_PASSWORD"]["secretKeyRef"],
        json!({"name": "admin-pw", "key": "pw"})
    );
    // The trial database provides the URL.
    assert_eq!(
        env["SIMCACHE_DB_URL"]["secretKeyRef"],
        json!({"name": "full-simcache-postgresql", "key": "url"})
    );
    // No password in the manifest (it would change on every `helm
    // template`): the operator pod's init container makes the Secret once.
    assert!(find(&docs, "Secret").is_empty());
    let init = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        init.args.as_ref().unwrap()[..2],
        [
            "trial-db-secret".to_string(),
            "--secret=full-simcache-postgresql".to_string()
        ]
    );
    assert!(
        init.args
            .as_ref()
            .unwrap()
            .contains(&format!("--host=full-simcache-postgresql.{}.svc", ns.name))
    );
    let sts = one(&docs, "StatefulSet");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "POSTGRES_PASSWORD")
            .unwrap()["valueFrom"]["secretKeyRef"],
        json!({"name": "full-simcache-postgresql", "key": "password"})
    );
    // The init container may read that one Secret, and create Secrets in
    // the release namespace; nothing more.
    let leader: Role = find(&docs, "Role")
        .into_iter()
        .map(typed::<Role>)
        .find(|r| r.metadata.name.as_deref() == Some("full-simcache-leader"))
        .unwrap();
    let secret_rules: Vec<_> = leader
        .rules
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.resources.as_deref() == Some(&["secrets".to_string()][..]))
        .map(|r| (r.verbs, r.resource_names))
        .collect();
    assert_eq!(
        secret_rules,
        [
            (
                vec!["get".to_string()],
                Some(vec!["full-simcache-postgresql".to_string()])
            ),
            (vec!["create".to_string()], None)
        ]
    );
    // Made once in the cluster, then never changed: run it twice, and
    // once more beside a Secret of the user's.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use simcache_operator::trial_db::{Ensured, TrialDb, ensure};
        let client = c.client().await;
        let t = TrialDb {
            secret: "trial-pw".into(),
            namespace: ns.name.clone(),
            host: format!("full-simcache-postgresql.{}.svc", ns.name),
            username: "simcache".into(),
            database: "simcache".into(),
        };
        let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &ns.name);
        let read = |s: Secret| {
            let d = s.data.unwrap();
            (
                String::from_utf8(d["password"].0.clone()).unwrap(),
                String::from_utf8(d["url"].0.clone()).unwrap(),
            )
        };
        assert_eq!(ensure(client.clone(), &t).await.unwrap(), Ensured::Created);
        let (pw, url) = read(secrets.get("trial-pw").await.unwrap());
        assert!(
            pw.len() >= 32 && pw.chars().all(|c| c.is_ascii_hexdigit()),
            "{pw}"
        );
        assert_eq!(
            url,
            format!(
                "postgres://simcache:{pw}@full-simcache-postgresql.{}.svc:5432/simcache",
                ns.name
            )
        );
        assert_eq!(ensure(client.clone(), &t).await.unwrap(), Ensured::Kept);
        assert_eq!(read(secrets.get("trial-pw").await.unwrap()), (pw, url));
    });
    // With watchNamespace the grant is a Role there, plus the leader Role.
    let roles: Vec<Role> = find(&docs, "Role").into_iter().map(typed).collect();
    assert_eq!(roles.len(), 2);
    // The usual hooks land where users expect them.
    let meta = dep
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap();
    assert_eq!(
        meta.annotations.as_ref().unwrap()["lab.example/owner"],
        "materials"
    );
    assert_eq!(meta.labels.as_ref().unwrap()["lab.example/tier"], "control");
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert!(
        pod.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .is_some()
    );
    assert_eq!(env_of(&dep)["HTTPS_PROXY"], json!("http://proxy.lab:3128"));
    let c0 = &pod.containers[0];
    assert_eq!(
        c0.args.as_ref().unwrap().last().map(String::as_str),
        Some("--reconcile-concurrency=64")
    );
    assert!(pod.volumes.as_ref().unwrap().iter().any(
        |v| v.name == "ca" && v.config_map.as_ref().map(|c| c.name.as_str()) == Some("corp-ca")
    ));
    assert!(
        c0.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == "ca" && m.mount_path == "/etc/corp-ca")
    );
    assert_eq!(
        pod.topology_spread_constraints.as_ref().unwrap()[0].topology_key,
        "topology.kubernetes.io/zone"
    );
    let sm = one(&docs, "ServiceMonitor");
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["honorLabels"], true);
    assert_eq!(ep["relabelings"][0]["targetLabel"], "cluster");
    assert_eq!(ep["metricRelabelings"][0]["action"], "drop");
    let pm_ep = &one(&docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0];
    assert_eq!(pm_ep["honorLabels"], false);
    assert_eq!(pm_ep["relabelings"][0]["replacement"], "lab-1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"],
        serde_json::to_value(&dep.spec.as_ref().unwrap().selector.match_labels).unwrap()
    );
    let pm = one(&docs, "PodMonitor");
    // The PodMonitor selects the pods the operator builds, on the sidecar's
    // probe port (its API is loopback only), by the name the pod gives it.
    // (core's pod tests check that the sidecar names its probe port so.)
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(
        pm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/managed-by"],
        simcache_core::pod::MANAGED_BY
    );
    let rule = one(&docs, "PrometheusRule");
    let alerts: BTreeSet<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    for a in [
        "SimcacheOperatorDown",
        "SimcacheReconcileErrors",
        "SimcacheRunFailureRatio",
        "SimcacheCacheHitRateDrop",
        "SimcachePostgresUnreachable",
        "SFMDeviceUnreachable",
    ] {
        assert!(alerts.contains(a), "alert {a} missing: {alerts:?}");
    }
    helm().uninstall(&c.kubeconfig, &ns.name, "full");
}

/// The operator's rules for Secrets across every Role and ClusterRole named
/// `name`: the verbs, by the namespace each is in ("" for cluster-wide).
fn secret_verbs(docs: &[Value], name: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in docs.iter().filter(|d| {
        matches!(d["kind"].as_str(), Some("Role" | "ClusterRole")) && d["metadata"]["name"] == name
    }) {
        let ns = d["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let verbs = out.entry(ns).or_default();
        for r in d["rules"].as_array().unwrap() {
            if r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "secrets")
            {
                assert!(
                    r.get("resourceNames").is_none(),
                    "the operator's rules name no Secret"
                );
                verbs.extend(
                    r["verbs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string()),
                );
            }
        }
    }
    out
}

#[test]
fn several_watch_namespaces_get_a_role_each_and_secrets_are_never_listed() {
    let c = cluster();
    c.install_crds();
    install_prometheus_operator_crds();
    let ns = c.namespace("chart-multi");
    let (a, b) = (c.namespace("watch-a"), c.namespace("watch-b"));
    let docs = render(
        &ns,
        "multi",
        json!({"database": {"existingSecret": "db"},
               "podMonitor": {"enabled": true},
               // The older single value joins the list; duplicates count once.
               "operator": {"watchNamespace": a.name, "watchNamespaces": [a.name, b.name]}}),
    );
    check_all_typed(&docs);
    assert!(find(&docs, "ClusterRole").is_empty());
    assert!(find(&docs, "ClusterRoleBinding").is_empty());
    let scoped: BTreeSet<String> = [a.name.clone(), b.name.clone()].into();
    let in_ns = |kind: &str| -> BTreeSet<String> {
        find(&docs, kind)
            .into_iter()
            .filter(|d| d["metadata"]["name"] == "multi-simcache")
            .map(|d| d["metadata"]["namespace"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(in_ns("Role"), scoped);
    assert_eq!(in_ns("RoleBinding"), scoped);
    for rb in find(&docs, "RoleBinding") {
        assert_eq!(rb["subjects"][0]["namespace"], json!(ns.name));
    }
    let dep: Deployment = typed(one(&docs, "Deployment"));
    assert_eq!(
        env_of(&dep)["SIMCACHE_WATCH_NAMESPACE"],
        json!(format!("{},{}", a.name, b.name))
    );
    let pm = one(&docs, "PodMonitor");
    assert_eq!(
        pm["spec"]["namespaceSelector"]["matchNames"],
        json!([a.name, b.name])
    );
    // Secrets: created and deleted (the run tokens), `get` by name for
    // SystemOfRecord probes, never listed or watched.
    let want: BTreeSet<String> = ["create", "delete", "get"].map(String::from).into();
    let verbs = secret_verbs(&docs, "multi-simcache");
    assert_eq!(verbs.len(), 2);
    assert!(verbs.values().all(|v| *v == want), "{verbs:?}");

    // Without SystemOfRecord probes, no read of any Secret at all; and the
    // default (all namespaces) grants the same verbs cluster-wide.
    let docs = render(
        &ns,
        "noread",
        json!({"database": {"existingSecret": "db"},
               "operator": {"watchNamespaces": [a.name]},
               "rbac": {"readSystemOfRecordSecrets": false}}),
    );
    let verbs = secret_verbs(&docs, "noread-simcache");
    assert_eq!(
        verbs,
        BTreeMap::from([(
            a.name.clone(),
            ["create", "delete"].map(String::from).into()
        )])
    );
    let docs = render(&ns, "wide", json!({"database": {"existingSecret": "db"}}));
    assert_eq!(
        secret_verbs(&docs, "wide-simcache"),
        BTreeMap::from([(String::new(), want)])
    );
    for r in ["multi", "noread", "wide"] {
        helm().uninstall(&c.kubeconfig, &ns.name, r);
    }
}

#[test]
fn the_optional_sfm_proxy_serves_with_sessions_from_the_shared_database() {
    let c = cluster();
    c.install_crds();
    let ns = c.namespace("chart-sfm");
    let values = json!({
        "database": {"existingSecret": "db"},
        "sfmProxy": {"enabled": true, "devices": ["field/unit-7"], "replicaCount": 2},
    });
    let docs = render(&ns, "s", values);
    check_all_typed(&docs);
    let deps: Vec<Deployment> = find(&docs, "Deployment").into_iter().map(typed).collect();
    let proxy = deps
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("s-simcache-sfm-proxy"))
        .expect("the sfm-proxy Deployment");
    assert_eq!(proxy.spec.as_ref().unwrap().replicas, Some(2));
    let pod = proxy.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let ctr = &pod.containers[0];
    let args = ctr.args.clone().unwrap();
    assert_eq!(args[0], "sfm-proxy");
    assert!(!args.iter().any(|a| a == "--no-auth"), "sessions are on");
    let env: std::collections::BTreeMap<String, Value> = ctr
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| {
            let v = match (e.value, e.value_from) {
                (Some(v), _) => json!(v),
                (None, Some(f)) => serde_json::to_value(f).unwrap(),
                _ => Value::Null,
            };
            (e.name, v)
        })
        .collect();
    assert_eq!(env["SIMCACHE_CACHE_DB_URL"]["secretKeyRef"]["name"], "db");
    assert_eq!(env["SIMCACHE_SFM_DEVICES"], "field/unit-7");
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "it needs no API access"
    );
    let sc = ctr.security_context.as_ref().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let svcs: Vec<&Value> = find(&docs, "Service");
    let svc = svcs
        .iter()
        .find(|s| s["metadata"]["name"] == "s-simcache-sfm-proxy")
        .expect("the sfm-proxy Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8200);
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/component"],
        "sfm-proxy"
    );
    helm().uninstall(&c.kubeconfig, &ns.name, "s");
    // Off by default.
    let docs = render(&ns, "d", json!({"database": {"existingSecret": "db"}}));
    assert!(
        find(&docs, "Deployment")
            .iter()
            .all(|d| d["metadata"]["name"] != "d-simcache-sfm-proxy")
    );
    helm().uninstall(&c.kubeconfig, &ns.name, "d");
}

/// The shared tier is on with default values: its Deployment runs the
/// sidecar image's `shared` with the operator's database Secret, the
/// operator points pods at its Service, and the container started exactly
/// as rendered serves. Off, pods keep caches of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_tier_is_on_by_default_and_serves_as_rendered() {
    let c = cluster();
    c.install_crds();
    let ns = c.namespace("chart-shared");
    let docs = render(&ns, "t", json!({"database": {"existingSecret": "db"}}));
    check_all_typed(&docs);
    let deps: Vec<Deployment> = find(&docs, "Deployment").into_iter().map(typed).collect();
    let tier = deps
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("t-simcache-shared"))
        .expect("the shared tier's Deployment");
    assert_eq!(tier.spec.as_ref().unwrap().replicas, Some(2));
    let pod = tier.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "it needs no API access"
    );
    let ctr = &pod.containers[0];
    let args = ctr.args.clone().unwrap();
    assert_eq!(args[0], "shared");
    assert!(!args.iter().any(|a| a == "--no-auth"), "sessions are on");
    let env = env_of(tier);
    assert_eq!(env["SIMCACHE_CACHE_DB_URL"]["secretKeyRef"]["name"], "db");
    assert!(
        ctr.liveness_probe.is_none(),
        "a database outage must not restart it"
    );
    let svc = find(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "t-simcache-shared")
        .expect("the shared tier's Service");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8300);
    assert_eq!(
        svc["spec"]["selector"]["app.kubernetes.io/component"],
        "shared-tier"
    );
    let operator: Deployment = typed(one(&docs, "Deployment"));
    assert_eq!(
        env_of(&operator)["SIMCACHE_SHARED_TIER_URL"],
        json!(format!("http://t-simcache-shared.{}.svc:8300", ns.name))
    );
    // Its NetworkPolicy admits run pods (any namespace) on its one port.
    let policy: k8s_openapi::api::networking::v1::NetworkPolicy = typed(
        find(&docs, "NetworkPolicy")
            .into_iter()
            .find(|p| p["metadata"]["name"] == "t-simcache-shared")
            .expect("the shared tier's NetworkPolicy"),
    );
    let spec = policy.spec.unwrap();
    assert_eq!(
        spec.pod_selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .unwrap()["app.kubernetes.io/component"],
        "shared-tier"
    );
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let rule = &spec.ingress.unwrap()[0];
    let from = &rule.from.as_ref().unwrap()[0];
    assert_eq!(
        from.namespace_selector,
        Some(Default::default()),
        "any namespace"
    );
    let exprs = from
        .pod_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .clone()
        .unwrap();
    assert_eq!(
        (exprs[0].key.as_str(), exprs[0].operator.as_str()),
        ("simcache.io/run", "Exists")
    );
    let port = &rule.ports.as_ref().unwrap()[0];
    assert_eq!(serde_json::to_value(&port.port).unwrap(), json!(8300));

    // Started as rendered (on a free port), with the database its Secret
    // names, it serves and answers health.
    let db = simcache_testkit::fresh_database("chart_shared").await;
    let port = simcache_testkit::ports::free_port().unwrap().to_string();
    let mut run_args: Vec<String> = args
        .iter()
        .map(|a| match a.as_str() {
            "--host=0.0.0.0" => "--host=127.0.0.1".to_string(),
            "--port=8300" => format!("--port={port}"),
            other => other.to_string(),
        })
        .collect();
    run_args.retain(|a| !a.is_empty());
    let argv: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let served = simcache_testkit::ServerProcess::spawn(
        &simcache_testkit::k8s::workspace_bin("simcache-sidecar"),
        &argv,
        &[("SIMCACHE_CACHE_DB_URL", db.as_str())],
    )
    .await;
    let health = reqwest::get(format!("{}/health", served.url))
        .await
        .unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    let refused = reqwest::get(format!("{}/tier/v1/cache/entry?key=a", served.url))
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        reqwest::StatusCode::UNAUTHORIZED,
        "no session, no entry"
    );
    helm().uninstall(&c.kubeconfig, &ns.name, "t");

    let docs = render(
        &ns,
        "o",
        json!({"database": {"existingSecret": "db"}, "sharedTier": {"enabled": false}}),
    );
    assert_eq!(find(&docs, "Deployment").len(), 1, "the operator alone");
    let operator: Deployment = typed(one(&docs, "Deployment"));
    assert!(!env_of(&operator).contains_key("SIMCACHE_SHARED_TIER_URL"));
    helm().uninstall(&c.kubeconfig, &ns.name, "o");
    // Switchable; with the trial database, only this release's own
    // components reach it.
    let docs = render(
        &ns,
        "nopol",
        json!({"networkPolicy": {"enabled": false}, "database": {"existingSecret": "db"}}),
    );
    assert!(find(&docs, "NetworkPolicy").is_empty());
    helm().uninstall(&c.kubeconfig, &ns.name, "nopol");
    let docs = render(&ns, "p", json!({"postgresql": {"enabled": true}}));
    let db_policy = find(&docs, "NetworkPolicy")
        .into_iter()
        .find(|p| p["metadata"]["name"] == "p-simcache-postgresql")
        .expect("the trial database's NetworkPolicy");
    let peers: Vec<&str> = db_policy["spec"]["ingress"][0]["from"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(peers, ["operator", "shared-tier", "sfm-proxy"]);
    helm().uninstall(&c.kubeconfig, &ns.name, "p");
}

#[test]
fn bad_values_are_refused_with_a_message_naming_them() {
    let c = cluster();
    c.install_crds();
    let ns = c.namespace("chart-bad");
    for (values, expect) in [
        (json!({}), "database.existingSecret"),
        (
            json!({"database": {"existingSecret": "db"}, "replicaCount": 0}),
            "replicaCount",
        ),
        (
            json!({"database": {"existingSecret": "db"}, "operator": {"logFormat": "xml"}}),
            "logFormat",
        ),
        (
            json!({"database": {"existingSecret": "db"}, "replicas": 3}),
            "replicas",
        ),
        (
            json!({"database": {"existingSecret": "db"}, "service": {"port": 70000}}),
            "port",
        ),
    ] {
        let err = helm()
            .install(&c.kubeconfig, &ns.name, "bad", &test_chart(), &values)
            .err()
            .unwrap_or_else(|| panic!("helm installed the chart with {values}"));
        assert!(err.0.contains(expect), "{values}: {}", err.0);
    }
    // Nothing was created.
    let out = c.kubectl(&["get", "deployments", "-n", &ns.name, "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
}

/// Metric names in a PromQL expression (ours, controller-runtime's, `up`).
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let mut word = String::new();
    let mut in_string = false;
    for ch in expr.chars().chain(std::iter::once(' ')) {
        if ch == '"' {
            in_string = !in_string;
            word.clear();
            continue;
        }
        if in_string {
            continue;
        }
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            word.push(ch);
        } else {
            if word.starts_with("simcache_") || word.starts_with("controller_runtime_") {
                out.insert(word.clone());
            }
            word.clear();
        }
    }
}

/// Metric names a `/metrics` page exports (histograms with their series).
async fn exported(url: &str) -> BTreeSet<String> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut names = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap_or_default());
            names.insert(name.to_string());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let c = cluster();
    c.install_crds();
    install_prometheus_operator_crds();
    let ns = c.namespace("chart-metrics");
    let mut values = everything_on(&ns.name);
    values["grafanaDashboard"]["enabled"] = json!(true);
    let docs = tokio::task::block_in_place(|| render(&ns, "m", values));
    let mut queried = BTreeSet::new();
    for r in one(&docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
    {
        metric_names(r["expr"].as_str().unwrap(), &mut queried);
    }
    let cm = one(&docs, "ConfigMap");
    let dash: Value = serde_json::from_str(cm["data"]["simcache.json"].as_str().unwrap()).unwrap();
    let mut panels = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            metric_names(t["expr"].as_str().unwrap(), &mut queried);
            panels += 1;
        }
    }
    assert!(panels >= 15, "the dashboard has {panels} queries");
    assert!(queried.len() >= 15, "only {queried:?}");

    // The operator with its controllers (leader) and the sidecar, each after
    // some traffic.
    let db = simcache_testkit::fresh_database("chart_metrics").await;
    let runs = tempfile::tempdir().unwrap();
    let op = OperatorLaunch {
        bin: OPERATOR.as_ref(),
        kubeconfig: &c.kubeconfig,
        namespace: &ns.name,
        db_url: &db,
        runs_dir: runs.path(),
        port: 0,
        extra: &[],
        log: "warn",
    }
    .spawn()
    .await;
    // A CachePolicy to sweep, so that its gauges exist.
    let policy = repo("examples/thermal/cache-policy.yaml");
    let out = c.kubectl(&["apply", "-n", &ns.name, "-f", policy.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut have = exported(&op.url).await;
    while !have.contains("simcache_operator_leader")
        || !have.contains("simcache_store_up")
        || !have.contains("simcache_operator_cache_entries")
    {
        assert!(Instant::now() < deadline, "operator metrics: {have:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        have = exported(&op.url).await;
    }
    let _ = reqwest::get(format!("{}/healthz", op.url)).await;
    have.extend(exported(&op.url).await);

    let cache_db = tempfile::tempdir().unwrap();
    let sidecar = ServerProcess::spawn(
        &workspace_bin("simcache-sidecar"),
        &["serve", "--port", "0", "--no-auth"],
        &[(
            "SIMCACHE_CACHE_DB_PATH",
            cache_db.path().join("cache.db").to_str().unwrap(),
        )],
    )
    .await;
    let http = reqwest::Client::new();
    let put = http
        .post(format!("{}/cache", sidecar.url))
        .json(&json!({"cache_key": "sim/1/result", "simulation_id": 1,
                      "simulation_name": "sim", "simulation_version": "1.0.0",
                      "execution_id": "exec-1", "squid_id": "sim/1.0.0/x",
                      "input_hash": "h1", "run_db_path": "/runs/exec-1.db",
                      "ttl_hours": 1}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    for key in ["sim/1/result", "sim/2/result"] {
        http.get(format!("{}/cache/{key}", sidecar.url))
            .send()
            .await
            .unwrap();
    }
    http.post(format!("{}/cache/invalidate", sidecar.url))
        .json(&json!({"pattern": "sim/9/*", "reason": "test"}))
        .send()
        .await
        .unwrap();
    have.extend(exported(&sidecar.url).await);

    // An SFMDevice (the operator's gauges) read through the shared SFM proxy.
    let sim = simcache_testkit::sfm_sim::SfmSimulator::start(0.001).await;
    sim.add_unit(
        "tcp:10.0.0.1:12345",
        simcache_testkit::sfm_sim::Unit::new("BE1", 1, 10),
    );
    let device = format!(
        "apiVersion: simcache.io/v1alpha1\nkind: SFMDevice\nmetadata:\n  name: unit\nspec:\n  upstream:\n    url: {}\n  address:\n    tcp:\n      host: 10.0.0.1\n",
        sim.url()
    );
    let out = c.kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&device));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !exported(&op.url)
        .await
        .contains("simcache_operator_sfm_device_reachable")
    {
        assert!(
            Instant::now() < deadline,
            "the SFMDevice was not reconciled"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let proxy = ServerProcess::spawn(
        &workspace_bin("simcache-sidecar"),
        &[
            "--backend",
            "postgresql",
            "--db-url",
            &db,
            "sfm-proxy",
            "--port",
            "0",
            "--no-auth",
        ],
        &[],
    )
    .await;
    for _ in 0..2 {
        let r = http
            .get(format!("{}/device/info?host=10.0.0.1", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
    }
    have.extend(exported(&proxy.url).await);
    have.extend(exported(&op.url).await);

    let missing: Vec<&String> = queried.iter().filter(|m| !have.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "queried by the dashboard or the alerts but exported by neither binary: {missing:?}\nexported: {have:?}"
    );
    drop(op);
    helm().uninstall(&c.kubeconfig, &ns.name, "m");
}

#[test]
fn the_dockerfiles_build_the_images_the_chart_and_the_operator_name() {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap())
            .unwrap();
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    let (major, minor) = simcache_controller::version::MINIMUM;
    assert_eq!(
        chart["kubeVersion"],
        format!(">={major}.{minor}.0-0"),
        "the chart asks for the Kubernetes the operator checks for"
    );
    let version = chart["appVersion"].as_str().unwrap();
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "appVersion is the crates' version"
    );
    // The sidecar's only port reachable from outside its pod.
    let sidecar_port = simcache_core::pod::PROBE_PORT;
    for (file, repository, bin, port) in [
        (
            "operator/Dockerfile",
            &values["image"]["repository"],
            "simcache-operator",
            values["service"]["port"].as_i64().unwrap(),
        ),
        (
            "sidecar/Dockerfile",
            &values["sidecar"]["image"]["repository"],
            "simcache-sidecar",
            i64::from(sidecar_port),
        ),
    ] {
        let d = std::fs::read_to_string(repo(file)).unwrap();
        let tag = format!("-t {}:{version} .", repository.as_str().unwrap());
        assert!(d.contains(&tag), "{file} does not build {tag}");
        assert!(d.contains(&format!("--bin {bin}")), "{file}");
        assert!(
            d.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]")),
            "{file}"
        );
        assert!(
            d.contains("FROM gcr.io/distroless/"),
            "{file}: distroless runtime"
        );
        let uid = values["podSecurityContext"]["runAsUser"].as_i64().unwrap();
        assert!(
            d.contains(&format!("USER {uid}:{uid}")),
            "{file} runs as the chart's runAsUser {uid}"
        );
        assert!(d.contains(&format!("EXPOSE {port}")), "{file}");
    }
    let help = std::process::Command::new(OPERATOR)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let want = format!(
        "{}:{version}",
        values["sidecar"]["image"]["repository"].as_str().unwrap()
    );
    assert!(
        String::from_utf8_lossy(&help.stdout).contains(&want),
        "the operator's default sidecar image is {want}"
    );
}

#[test]
fn the_kind_profile_renders_one_replica_on_read_write_once_with_the_trial_database() {
    let c = cluster();
    c.install_crds();
    let ns = c.namespace("chart-kind");
    let rel = format!("k{}", &ns.name[ns.name.len() - 6..]);
    let profile: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo("charts/simcache/values-kind.yaml")).unwrap(),
    )
    .unwrap();
    let out = helm()
        .install(&c.kubeconfig, &ns.name, &rel, &test_chart(), &profile)
        .unwrap_or_else(|e| panic!("helm install with values-kind.yaml: {}", e.0));
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(out["manifest"].as_str().unwrap())
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    let dep: Deployment = typed(one(&docs, "Deployment"));
    assert_eq!(dep.spec.as_ref().unwrap().replicas, Some(1));
    let pvc = find(&docs, "PersistentVolumeClaim");
    assert!(
        pvc.iter()
            .any(|p| p["spec"]["accessModes"] == json!(["ReadWriteOnce"])),
        "the run storage is ReadWriteOnce"
    );
    assert_eq!(find(&docs, "StatefulSet").len(), 1, "the trial database");
    assert!(find(&docs, "PodDisruptionBudget").is_empty());
    let notes = out["info"]["notes"].as_str().unwrap_or_default();
    assert!(!notes.contains("WARNING"), "{notes}");
    helm().uninstall(&c.kubeconfig, &ns.name, &rel);

    // Two replicas on ReadWriteOnce storage: the NOTES say it cannot work.
    let ns2 = c.namespace("chart-rwo");
    let rel2 = format!("w{}", &ns2.name[ns2.name.len() - 6..]);
    let out = helm()
        .install(
            &c.kubeconfig,
            &ns2.name,
            &rel2,
            &test_chart(),
            &json!({"database": {"existingSecret": "db"},
                    "runStorage": {"accessModes": ["ReadWriteOnce"]}}),
        )
        .unwrap_or_else(|e| panic!("helm install: {}", e.0));
    let notes = out["info"]["notes"].as_str().unwrap_or_default();
    assert!(
        notes.contains("WARNING: 2 replicas share the run storage")
            && notes.contains("ReadWriteMany"),
        "{notes}"
    );
    helm().uninstall(&c.kubeconfig, &ns2.name, &rel2);
}

/// The rendered PrometheusRule passes `promtool check rules`, and each alert
/// fires (and stays quiet) as intended under `promtool test rules`, with
/// series shaped the way the operator exports them.
#[test]
fn the_alert_rules_pass_promtool_check_and_unit_tests() {
    use simcache_testkit::prometheus::run_promtool;
    let c = cluster();
    c.install_crds();
    install_prometheus_operator_crds();
    let ns = c.namespace("chart-rules");
    let docs = render(
        &ns,
        "full",
        json!({"database": {"existingSecret": "db"}, "prometheusRule": {"enabled": true}}),
    );
    helm().uninstall(&c.kubeconfig, &ns.name, "full");
    let rule = one(&docs, "PrometheusRule");
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        serde_yaml::to_string(&json!({"groups": rule["spec"]["groups"]})).unwrap(),
    )
    .unwrap();
    let (ok, out) = run_promtool(&["check", "rules", rules.to_str().unwrap()]);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");

    // The unit tests judge the expressions; annotation wording is not
    // theirs to pin, so it is left out of their copy.
    let mut groups = rule["spec"]["groups"].clone();
    for g in groups.as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("annotations");
        }
    }
    let bare = dir.path().join("bare.yaml");
    std::fs::write(
        &bare,
        serde_yaml::to_string(&json!({"groups": groups})).unwrap(),
    )
    .unwrap();
    let n = ns.name.as_str();
    let s = |name: &str, labels: &str, values: &str| json!({"series": format!("{name}{{namespace=\"{n}\"{labels}}}"), "values": values});
    let alert = |name: &str, at: &str, labels: Value| {
        json!({"alertname": name, "eval_time": at,
               "exp_alerts": if labels.is_null() { json!([]) } else { json!([{"exp_labels": labels}]) }})
    };
    let fires = |name: &str, at: &str, extra: Value| {
        let mut l = extra;
        let sev = if [
            "SimcacheOperatorDown",
            "SimcacheNoLeader",
            "SimcachePostgresUnreachable",
        ]
        .contains(&name)
        {
            "critical"
        } else {
            "warning"
        };
        l["severity"] = json!(sev);
        alert(name, at, l)
    };
    let quiet = |name: &str, at: &str| alert(name, at, Value::Null);
    let tests = json!([
        {"interval": "1m", "input_series": [s("up", ",job=\"full-simcache\"", "0x10")],
         "alert_rule_test": [fires("SimcacheOperatorDown", "6m", json!({})),
                             quiet("SimcacheOperatorDown", "4m")]},
        {"interval": "1m", "input_series": [s("up", ",job=\"full-simcache\"", "1x10")],
         "alert_rule_test": [quiet("SimcacheOperatorDown", "9m")]},
        {"interval": "1m", "input_series": [s("simcache_operator_leader", ",pod=\"a\"", "0x10"),
                                            s("simcache_operator_leader", ",pod=\"b\"", "0x10")],
         "alert_rule_test": [fires("SimcacheNoLeader", "6m", json!({}))]},
        {"interval": "1m", "input_series": [s("simcache_operator_leader", ",pod=\"a\"", "0x10"),
                                            s("simcache_operator_leader", ",pod=\"b\"", "1x10")],
         "alert_rule_test": [quiet("SimcacheNoLeader", "9m")]},
        {"interval": "1m", "input_series": [s("controller_runtime_reconcile_errors_total", ",controller=\"simulationrun\"", "0+60x20"),
                                            s("controller_runtime_reconcile_errors_total", ",controller=\"simulation\"", "0+1x20")],
         "alert_rule_test": [fires("SimcacheReconcileErrors", "17m", json!({"controller": "simulationrun"}))]},
        {"interval": "1m", "input_series": [s("simcache_operator_run_phase_transitions_total", ",phase=\"Failed\"", "0+10x60"),
                                            s("simcache_operator_run_phase_transitions_total", ",phase=\"Succeeded\"", "0+10x60")],
         "alert_rule_test": [fires("SimcacheRunFailureRatio", "50m", json!({})),
                             quiet("SimcacheRunFailureRatio", "10m")]},
        {"interval": "1m", "input_series": [s("simcache_operator_run_phase_transitions_total", ",phase=\"Failed\"", "0+1x60"),
                                            s("simcache_operator_run_phase_transitions_total", ",phase=\"Succeeded\"", "0+20x60")],
         "alert_rule_test": [quiet("SimcacheRunFailureRatio", "50m")]},
        // A day of 90 % hits, then an hour and a half of misses only.
        {"interval": "1m", "input_series": [s("simcache_operator_cache_lookups_total", ",result=\"hit\"", "0+90x1440 129600+0x90"),
                                            s("simcache_operator_cache_lookups_total", ",result=\"miss\"", "0+10x1440 14400+100x90")],
         "alert_rule_test": [fires("SimcacheCacheHitRateDrop", "1530m", json!({})),
                             quiet("SimcacheCacheHitRateDrop", "1400m")]},
        {"interval": "1m", "input_series": [s("simcache_store_up", ",pod=\"a\"", "1 1 0x10")],
         "alert_rule_test": [fires("SimcachePostgresUnreachable", "6m", json!({})),
                             quiet("SimcachePostgresUnreachable", "3m")]},
        {"interval": "1m", "input_series": [s("simcache_operator_sfm_device_reachable", ",sfmdevice_namespace=\"lab\",sfmdevice=\"unit-7\"", "0x20"),
                                            s("simcache_operator_sfm_device_reachable", ",sfmdevice_namespace=\"lab\",sfmdevice=\"unit-8\"", "1x20")],
         "alert_rule_test": [fires("SFMDeviceUnreachable", "16m", json!({"sfmdevice_namespace": "lab", "sfmdevice": "unit-7"})),
                             quiet("SFMDeviceUnreachable", "14m")]},
    ]);
    let unit = dir.path().join("tests.yaml");
    std::fs::write(
        &unit,
        serde_yaml::to_string(
            &json!({"rule_files": ["bare.yaml"], "evaluation_interval": "1m", "tests": tests}),
        )
        .unwrap(),
    )
    .unwrap();
    let (ok, out) = run_promtool(&["test", "rules", unit.to_str().unwrap()]);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The CRDs are chart templates: `helm upgrade` updates them (a chart's
/// `crds/` folder never is), and `helm uninstall` keeps them.
#[test]
fn crds_install_with_the_release_upgrade_with_it_and_stay_after_uninstall() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let c = cluster();
    c.install_crds();
    let ns = c.namespace("chart-crds");
    let rel = format!("c{}", &ns.name[ns.name.len() - 6..]);
    let (_copy, chart) = simcache_testkit::helm::chart_for_test_apiserver();
    let values =
        json!({"database": {"existingSecret": "db"}, "crds": {"install": true, "keep": true}});
    let out = helm()
        .install_owning(&c.kubeconfig, &ns.name, &rel, &chart, &values)
        .unwrap_or_else(|e| panic!("helm install with crds.install: {}", e.0));
    let manifest = out["manifest"].as_str().unwrap();
    let crd_docs: Vec<Value> = serde_yaml::Deserializer::from_str(manifest)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(
        crd_docs.len(),
        simcache_crds::all().len(),
        "every CRD is in the release"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let crd_labels = |name: &str| {
        rt.block_on(async {
            let api: kube::Api<CustomResourceDefinition> = kube::Api::all(c.client().await);
            let crd = api.get(name).await.unwrap();
            (
                crd.metadata.labels.unwrap_or_default(),
                crd.metadata.annotations.unwrap_or_default(),
            )
        })
    };
    let (labels, annotations) = crd_labels("simulations.simcache.io");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
    assert_eq!(labels["helm.sh/chart"], "simcache-0.1.0");
    assert_eq!(annotations["helm.sh/resource-policy"], "keep");
    assert_eq!(annotations["meta.helm.sh/release-name"], rel.as_str());

    // A newer chart: the upgrade reaches the CRDs.
    let meta = chart.join("Chart.yaml");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, text.replace("\nversion: 0.1.0", "\nversion: 0.1.1")).unwrap();
    helm()
        .upgrade(&c.kubeconfig, &ns.name, &rel, &chart, &values)
        .unwrap_or_else(|e| panic!("helm upgrade: {}", e.0));
    for (name, _) in simcache_crds::all() {
        let name = name.trim_end_matches(".yaml").to_string();
        assert_eq!(
            crd_labels(&name).0["helm.sh/chart"],
            "simcache-0.1.1",
            "{name}"
        );
    }

    // Uninstalled: the CRDs (and so every object of their kinds) stay.
    helm().uninstall(&c.kubeconfig, &ns.name, &rel);
    let out = c.kubectl(&["get", "crd", "simulations.simcache.io", "-o", "name"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // crds.install=false renders none.
    let docs = render(&ns, "nocrds", json!({"database": {"existingSecret": "db"}}));
    assert!(find(&docs, "CustomResourceDefinition").is_empty());
    helm().uninstall(&c.kubeconfig, &ns.name, "nocrds");
}

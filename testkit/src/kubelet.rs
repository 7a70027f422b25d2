//! The test node: with no kubelet in the private cluster, this plays one for
//! the pods simcache creates in one namespace. It runs their containers as
//! local processes — the real sidecar binary for our sidecar image, the
//! simulation's command for the simulation — and writes pod status back
//! through the API, as a kubelet would:
//!
//! - native sidecars (init containers with `restartPolicy: Always`; API
//!   servers before 1.28 drop that field, so our sidecar is also known by its
//!   container name) start first and must print their URL before the main
//!   containers start; they get SIGTERM once the main containers ended;
//! - `emptyDir` volumes are directories, and a container's mount paths in its
//!   command, arguments and environment are rewritten to them;
//! - the pod network is the loopback: the sidecar listens on a free port and
//!   the simulation's `127.0.0.1:<sidecar port>` is rewritten to it;
//! - env from Secrets and the downward API (name, namespace) is resolved;
//! - deleting the pod kills its processes; `activeDeadlineSeconds` holds.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Which pods the node runs: ours, and (so that on a real cluster no real
/// node takes them) only those asking for this node label, which the tests
/// pass to the operator as `--pod-node-selector`.
const SELECTOR: &str = "app.kubernetes.io/managed-by=simcache-operator";
pub const NODE_LABEL: &str = "simcache.io/test-node=local";
/// The container name that marks our sidecar.
const SIDECAR_NAME: &str = "simcache-sidecar";

pub struct TestNode {
    task: JoinHandle<()>,
    /// How many pods it has started (tests count them).
    pub started: Arc<Mutex<Vec<String>>>,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestNode {
    /// Starts playing the node for `namespace`. `sidecar_bin` runs for our
    /// sidecar image.
    pub fn start(client: Client, namespace: &str, sidecar_bin: PathBuf) -> TestNode {
        Self::with_capacity(client, namespace, sidecar_bin, usize::MAX)
    }

    /// A node that runs at most `max_pods` pods at once (as a kubelet's
    /// `maxPods` does); the others wait until one finishes.
    pub fn with_capacity(
        client: Client,
        namespace: &str,
        sidecar_bin: PathBuf,
        max_pods: usize,
    ) -> TestNode {
        let started = Arc::new(Mutex::new(Vec::new()));
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        let seen = started.clone();
        let task = tokio::spawn(async move {
            let mut handled: HashSet<String> = HashSet::new();
            let mut runs: Vec<JoinHandle<()>> = Vec::new();
            loop {
                if let Ok(list) = api.list(&ListParams::default().labels(SELECTOR)).await {
                    for pod in list.items {
                        let uid = pod.uid().unwrap_or_default();
                        let done = pod
                            .status
                            .as_ref()
                            .and_then(|s| s.phase.as_deref())
                            .is_some_and(|p| p == "Succeeded" || p == "Failed");
                        let ours = pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_selector.as_ref())
                            .is_some_and(|n| {
                                NODE_LABEL
                                    .split_once('=')
                                    .is_some_and(|(k, v)| n.get(k).is_some_and(|x| x == v))
                            });
                        if done || !ours || handled.contains(&uid) {
                            continue;
                        }
                        runs.retain(|h| !h.is_finished());
                        if runs.len() >= max_pods {
                            break;
                        }
                        handled.insert(uid);
                        seen.lock().push(pod.name_any());
                        let (api, secrets, bin) =
                            (api.clone(), secrets.clone(), sidecar_bin.clone());
                        runs.push(tokio::spawn(async move {
                            let name = pod.name_any();
                            if let Err(e) = run_pod(&api, &secrets, &bin, pod).await {
                                eprintln!("test node: pod {name}: {e}");
                            }
                        }));
                    }
                }
                runs.retain(|h| !h.is_finished());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        TestNode { task, started }
    }

    pub fn pods_started(&self) -> Vec<String> {
        self.started.lock().clone()
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Local directories standing in for the pod's volumes.
struct Volumes {
    _dir: tempfile::TempDir,
    paths: BTreeMap<String, PathBuf>,
}

async fn volumes(pod: &Pod, secrets: &Api<Secret>) -> Result<Volumes, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut paths = BTreeMap::new();
    for v in pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default()
    {
        let p = dir.path().join(&v.name);
        std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
        // A Secret volume holds a file per key, as a kubelet writes it.
        if let Some(sv) = &v.secret {
            let name = sv.secret_name.clone().unwrap_or_default();
            match secrets.get_opt(&name).await {
                Ok(Some(secret)) => {
                    for (k, b) in secret.data.unwrap_or_default() {
                        std::fs::write(p.join(&k), &b.0).map_err(|e| e.to_string())?;
                    }
                }
                Ok(None) if sv.optional == Some(true) => {}
                Ok(None) => return Err(format!("secret volume: no Secret {name}")),
                Err(e) => return Err(format!("secret {name}: {e}")),
            }
        }
        paths.insert(v.name, p);
    }
    Ok(Volumes { _dir: dir, paths })
}

/// Rewrites a container's mount paths (and the sidecar's pod-local address)
/// in a string.
struct Rewrites(Vec<(String, String)>);

impl Rewrites {
    fn apply(&self, s: &str) -> String {
        self.0
            .iter()
            .fold(s.to_string(), |acc, (from, to)| acc.replace(from, to))
    }
}

fn mounts(c: &Container, vols: &Volumes) -> Vec<(String, String)> {
    c.volume_mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            vols.paths
                .get(&m.name)
                .map(|p| (m.mount_path, p.display().to_string()))
        })
        .collect()
}

async fn resolve_env(
    vars: &[EnvVar],
    pod: &Pod,
    secrets: &Api<Secret>,
    rw: &Rewrites,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for v in vars {
        let value = if let Some(val) = &v.value {
            rw.apply(val)
        } else if let Some(from) = &v.value_from {
            if let Some(r) = &from.secret_key_ref {
                let s = secrets
                    .get(&r.name)
                    .await
                    .map_err(|e| format!("secret {}: {e}", r.name))?;
                match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                    // Mount paths in a Secret's value (a URL naming a
                    // mounted CA file) are rewritten like any other.
                    Some(b) => rw.apply(&String::from_utf8_lossy(&b.0)),
                    // As the kubelet does: an optional key that is missing
                    // leaves the variable out.
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("secret {} has no key {}", r.name, r.key)),
                }
            } else if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.name" => pod.name_any(),
                    "metadata.namespace" => pod.namespace().unwrap_or_default(),
                    other => return Err(format!("unsupported fieldRef {other}")),
                }
            } else {
                return Err(format!("unsupported valueFrom for {}", v.name));
            }
        } else {
            String::new()
        };
        out.push((v.name.clone(), value));
    }
    Ok(out)
}

fn base_command(program: &str, args: &[String], env: &[(String, String)], cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn terminated(code: i32, started: &str) -> Value {
    json!({"terminated": {
        "exitCode": code,
        "reason": if code == 0 { "Completed" } else { "Error" },
        "startedAt": started,
        "finishedAt": now(),
    }})
}

fn container_status(name: &str, image: &str, state: Value) -> Value {
    json!({"name": name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
           "started": state.get("running").is_some(), "state": state})
}

async fn patch_status(api: &Api<Pod>, name: &str, status: Value) -> Result<(), String> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(|_| ())
    .map_err(|e| format!("patching the status of {name}: {e}"))
}

async fn terminate(child: &mut Child, grace: Duration) -> i32 {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(s)) => exit_code(s),
        _ => {
            let _ = child.kill().await;
            137
        }
    }
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9))
}

async fn run_pod(
    api: &Api<Pod>,
    secrets: &Api<Secret>,
    sidecar_bin: &Path,
    pod: Pod,
) -> Result<(), String> {
    let name = pod.name_any();
    let spec = pod.spec.clone().ok_or("pod without spec")?;
    let vols = volumes(&pod, secrets).await?;
    let work = vols._dir.path().to_path_buf();
    let start = now();
    let grace =
        Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(1) as u64);

    // Native sidecars first: each must print its URL.
    let mut sidecars: Vec<(Container, Child)> = Vec::new();
    let mut port_rewrites: Vec<(String, String)> = Vec::new();
    for c in spec.init_containers.clone().unwrap_or_default() {
        let native = c.restart_policy.as_deref() == Some("Always") || c.name == SIDECAR_NAME;
        if !native {
            return Err(format!(
                "init container {} is not supported by the test node",
                c.name
            ));
        }
        let rw = Rewrites(mounts(&c, &vols));
        let mut env = resolve_env(&c.env.clone().unwrap_or_default(), &pod, secrets, &rw).await?;
        env.push(("SIMCACHE_CACHE_HOST".into(), "127.0.0.1".into()));
        env.push(("SIMCACHE_CACHE_PORT".into(), "0".into()));
        // Many pods share this node's loopback: probes on a free port too.
        env.push(("SIMCACHE_PROBE_LISTEN".into(), "127.0.0.1:0".into()));
        let args: Vec<String> = c
            .args
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|a| rw.apply(a))
            .collect();
        let log = std::fs::File::create(work.join(format!("{}.log", c.name)))
            .map_err(|e| e.to_string())?;
        let mut child = base_command(&sidecar_bin.display().to_string(), &args, &env, &work)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", c.name))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| format!("{} printed no URL within 30 s", c.name))?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "{} exited before serving: {}",
                    c.name,
                    std::fs::read_to_string(work.join(format!("{}.log", c.name)))
                        .unwrap_or_default()
                )
            })?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = line
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string();
        let actual = url.trim_start_matches("http://").to_string();
        // The simulation reaches its sidecar's API port on loopback.
        let api_port = simcache_core::pod::SIDECAR_PORT;
        port_rewrites.push((format!("127.0.0.1:{api_port}"), actual.clone()));
        port_rewrites.push((format!("localhost:{api_port}"), actual.clone()));
        sidecars.push((c, child));
    }
    let image = |c: &Container| c.image.clone().unwrap_or_default();
    let init_running: Vec<Value> = sidecars
        .iter()
        .map(|(c, _)| {
            container_status(&c.name, &image(c), json!({"running": {"startedAt": start}}))
        })
        .collect();

    // The main container(s).
    let mut mains: Vec<(Container, Child)> = Vec::new();
    for c in &spec.containers {
        let mut rw = mounts(c, &vols);
        rw.extend(port_rewrites.iter().cloned());
        let rw = Rewrites(rw);
        let env = resolve_env(&c.env.clone().unwrap_or_default(), &pod, secrets, &rw).await?;
        let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
        argv.extend(c.args.clone().unwrap_or_default());
        let argv: Vec<String> = argv.iter().map(|a| rw.apply(a)).collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(format!(
                "container {} has no command (the test node cannot read image entrypoints)",
                c.name
            ));
        };
        let cwd = c
            .working_dir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| work.clone());
        let out = std::fs::File::create(work.join(format!("{}.log", c.name)))
            .map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = base_command(program, args, &env, &cwd)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("starting {} ({program}): {e}", c.name))?;
        mains.push((c.clone(), child));
    }
    let main_running: Vec<Value> = mains
        .iter()
        .map(|(c, _)| {
            container_status(&c.name, &image(c), json!({"running": {"startedAt": start}}))
        })
        .collect();
    patch_status(
        api,
        &name,
        json!({"phase": "Running", "startTime": start, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
               "initContainerStatuses": init_running, "containerStatuses": main_running}),
    )
    .await?;

    // Wait for the main containers; stop early if the pod goes away or its
    // deadline passes.
    let deadline = spec
        .active_deadline_seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s.max(0) as u64));
    let mut codes: Vec<Option<i32>> = vec![None; mains.len()];
    let mut gone = false;
    let mut deadline_exceeded = false;
    let mut ticks = 0u32;
    while codes.iter().any(Option::is_none) {
        for (i, (_, child)) in mains.iter_mut().enumerate() {
            if codes[i].is_none()
                && let Ok(Some(s)) = child.try_wait()
            {
                codes[i] = Some(exit_code(s));
            }
        }
        ticks += 1;
        if ticks.is_multiple_of(5) && matches!(api.get_opt(&name).await, Ok(None)) {
            gone = true;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() > d) {
            deadline_exceeded = true;
        }
        if gone || deadline_exceeded {
            for (i, (_, child)) in mains.iter_mut().enumerate() {
                if codes[i].is_none() {
                    codes[i] = Some(terminate(child, grace).await);
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let main_done: Vec<Value> = mains
        .iter()
        .zip(&codes)
        .map(|((c, _), code)| {
            container_status(&c.name, &image(c), terminated(code.unwrap_or(137), &start))
        })
        .collect();
    // Tell the API the main containers ended before the sidecars stop, as a
    // kubelet does.
    if !gone {
        patch_status(api, &name, json!({"containerStatuses": main_done})).await?;
    }
    let mut init_done = Vec::new();
    for (c, mut child) in sidecars {
        let code = terminate(&mut child, grace).await;
        init_done.push(container_status(
            &c.name,
            &image(&c),
            terminated(code, &start),
        ));
    }
    if gone {
        return Ok(());
    }
    let ok = codes.iter().all(|c| *c == Some(0));
    let mut status = json!({
        "phase": if ok { "Succeeded" } else { "Failed" },
        "initContainerStatuses": init_done,
        "containerStatuses": main_done,
    });
    if deadline_exceeded {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!("Pod was active on the node longer than the specified deadline");
    }
    patch_status(api, &name, status).await
}

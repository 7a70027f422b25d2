//! A real Kubernetes API server for tests: `SIMCACHE_TEST_KUBECONFIG` points
//! at any cluster; otherwise a private etcd + kube-apiserver (built once per
//! machine by `testkit/k8s/provision.sh`) is started on loopback for this test
//! binary, with TLS (self-signed serving certificate), token auth and RBAC,
//! and removed when the binary exits. When neither works the tests FAIL
//! saying why — they never pass by skipping.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct KubeCluster {
    pub kubeconfig: PathBuf,
    /// True when the cluster came from `SIMCACHE_TEST_KUBECONFIG`.
    pub external: bool,
    /// The API server's audit log (JSON lines, metadata level): every call
    /// with its user, verb and resource. Only the private API server has one.
    pub audit_log: Option<PathBuf>,
}

static CLUSTER: OnceLock<Result<KubeCluster, String>> = OnceLock::new();

/// The cluster for this test binary; panics with the reason when there is none.
pub fn cluster() -> &'static KubeCluster {
    match CLUSTER.get_or_init(|| match std::env::var("SIMCACHE_TEST_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Ok(KubeCluster {
            kubeconfig: PathBuf::from(p),
            external: true,
            audit_log: None,
        }),
        _ => start_local(),
    }) {
        Ok(c) => c,
        Err(e) => panic!(
            "no Kubernetes API server for the tests: {e}\nSet SIMCACHE_TEST_KUBECONFIG to use an existing cluster."
        ),
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Why a private cluster did not start.
enum StartFailure {
    /// etcd or the API server exited at once (a port taken meanwhile):
    /// worth another try on new ports.
    Exited(String),
    Fatal(String),
}

impl From<String> for StartFailure {
    fn from(e: String) -> Self {
        StartFailure::Fatal(e)
    }
}

fn start_local() -> Result<KubeCluster, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/provision.sh");
    let bin = PathBuf::from(run(
        Command::new("bash").arg(&script).stderr(Stdio::inherit()),
        "provisioning kube-apiserver",
    )?);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match start_once(&bin) {
            Ok(c) => return Ok(c),
            Err(StartFailure::Exited(e)) if attempt < crate::ports::ATTEMPTS => {
                eprintln!("private cluster exited at start ({e}); trying new ports");
            }
            Err(StartFailure::Exited(e) | StartFailure::Fatal(e)) => return Err(e),
        }
    }
}

fn start_once(bin: &Path) -> Result<KubeCluster, StartFailure> {
    let dir = tempfile::Builder::new()
        .prefix("simcache-k8s-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let ports = crate::ports::free_ports(3)?;
    let (client, peer, secure) = (ports[0], ports[1], ports[2]);
    run(
        Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(dir.join("sa.key"))
            .arg("2048"),
        "generating the service-account key",
    )?;
    run(
        Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(dir.join("sa.key"))
            .arg("-out")
            .arg(dir.join("sa.pub")),
        "deriving the service-account public key",
    )?;
    let token = {
        let mut b = [0u8; 16];
        let _ = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{token},simcache-test-admin,1,system:masters\n"),
    )
    .map_err(|e| e.to_string())?;
    // Metadata of every request except the API server's own health checks:
    // the RBAC test compares what the operator did with what the chart grants.
    std::fs::write(
        dir.join("audit-policy.yaml"),
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  nonResourceURLs: ['/readyz*', '/healthz*', '/livez*']\n- level: Metadata\n",
    )
    .map_err(|e| e.to_string())?;
    let log = |name: &str| {
        std::fs::File::create(dir.join(name))
            .map(Stdio::from)
            .map_err(|e| e.to_string())
    };
    let mut etcd = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
        .stdout(log("etcd.log")?)
        .stderr(log("etcd.err")?)
        .spawn()
        .map_err(|e| format!("starting etcd: {e}"))?;
    let mut apiserver = Command::new(bin.join("kube-apiserver"))
        .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={secure}"))
        .arg("--cert-dir")
        .arg(dir.join("certs"))
        .arg("--token-auth-file")
        .arg(dir.join("tokens.csv"))
        .arg("--authorization-mode=RBAC")
        .arg("--audit-policy-file")
        .arg(dir.join("audit-policy.yaml"))
        .arg("--audit-log-path")
        .arg(dir.join("audit.log"))
        .arg("--audit-log-maxsize=0")
        .arg("--service-account-key-file")
        .arg(dir.join("sa.pub"))
        .arg("--service-account-signing-key-file")
        .arg(dir.join("sa.key"))
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--allow-privileged=true")
        .stdout(log("apiserver.log")?)
        .stderr(log("apiserver.err")?)
        .spawn()
        .map_err(|e| format!("starting kube-apiserver: {e}"))?;
    spawn_reaper(&dir, &[etcd.id(), apiserver.id()])?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: local, cluster: {{server: \"https://127.0.0.1:{secure}\", insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: admin, user: {{token: {token}}}}}]\ncontexts: [{{name: local, context: {{cluster: local, user: admin, namespace: default}}}}]\ncurrent-context: local\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let c = KubeCluster {
        kubeconfig,
        external: false,
        audit_log: Some(dir.join("audit.log")),
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = c.kubectl(&["get", "--raw", "/readyz"]);
        if ready.status.success() {
            return Ok(c);
        }
        let exited = [
            ("etcd", etcd.try_wait(), "etcd.err"),
            ("kube-apiserver", apiserver.try_wait(), "apiserver.err"),
        ];
        for (name, status, log) in exited {
            if let Ok(Some(status)) = status {
                let _ = etcd.kill();
                let _ = apiserver.kill();
                let tail = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(StartFailure::Exited(format!(
                    "{name} exited ({status}): {}",
                    tail.join(" | ")
                )));
            }
        }
        if Instant::now() > deadline {
            return Err(StartFailure::Fatal(format!(
                "kube-apiserver not ready after 90 s: {}\n{}",
                String::from_utf8_lossy(&ready.stderr),
                std::fs::read_to_string(dir.join("apiserver.err"))
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .join("\n")
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Stops etcd and the API server and removes their directory when this
/// process is gone (however it ends).
fn spawn_reaper(dir: &Path, pids: &[u32]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let kills: String = pids
        .iter()
        .map(|p| format!("kill {p} 2>/dev/null; "))
        .collect();
    let script = format!(
        "while [ -d /proc/{me} ]; do sleep 1; done; {kills} sleep 2; rm -rf '{dir}'",
        me = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("cannot start the cleanup watcher: {e}"))
}

impl KubeCluster {
    /// Runs the real `kubectl` against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    /// `kubectl` with `input` on stdin (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new("kubectl");
        // A fresh discovery cache for every call on the private cluster: a
        // cached discovery from before the CRDs existed makes kubectl report
        // "couldn't find resource" for our kinds.
        let cache = tempfile::tempdir().ok();
        if let (false, Some(c)) = (self.external, &cache) {
            cmd.arg(format!("--cache-dir={}", c.path().display()));
        }
        let mut child = cmd
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            let _ = stdin.write_all(text.as_bytes());
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"))
    }

    /// A client of the Rust `kube` crate for this cluster.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|e| panic!("reading {}: {e}", self.kubeconfig.display()));
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", self.kubeconfig.display()));
        kube::Client::try_from(cfg).unwrap_or_else(|e| panic!("kube client: {e}"))
    }

    /// Applies the generated CRDs (idempotent) and waits until they serve.
    pub fn install_crds(&self) {
        // Once per test binary: concurrent applies race on creation.
        static DONE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
        let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
        if *done {
            return;
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
        self.apply_crds(
            &dir,
            &[
                "simulations.simcache.io",
                "simulationruns.simcache.io",
                "cachepolicies.simcache.io",
            ],
        );
        *done = true;
    }

    /// Applies the CRDs in `path` (a file or folder) and waits until the
    /// named ones are Established.
    pub fn apply_crds(&self, path: &Path, names: &[&str]) {
        let out = self.kubectl(&["apply", "-f", &path.display().to_string()]);
        assert!(
            out.status.success(),
            "applying the CRDs in {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let crds: Vec<String> = names.iter().map(|n| format!("crd/{n}")).collect();
        let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        args.extend(crds.iter().map(String::as_str));
        let out = self.kubectl(&args);
        assert!(
            out.status.success(),
            "waiting for the CRDs {names:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh namespace for one test (deleted by [`Namespace`]'s drop).
    pub fn namespace(&self, hint: &str) -> Namespace<'_> {
        let mut b = [0u8; 3];
        let _ = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
        let name = format!("simcache-test-{hint}-{:02x}{:02x}{:02x}", b[0], b[1], b[2]);
        let out = self.kubectl(&["create", "namespace", &name]);
        assert!(
            out.status.success(),
            "creating namespace {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Pods need the namespace's default service account, which a
        // controller manager creates; without one, create it here.
        let sa = self.kubectl(&["create", "serviceaccount", "default", "-n", &name]);
        let err = String::from_utf8_lossy(&sa.stderr);
        assert!(
            sa.status.success() || err.contains("AlreadyExists") || err.contains("already exists"),
            "creating the default service account in {name}: {err}"
        );
        Namespace {
            cluster: self,
            name,
        }
    }
}

pub struct Namespace<'a> {
    cluster: &'a KubeCluster,
    pub name: String,
}

/// A binary of this workspace (e.g. `simcache-sidecar`), built when the
/// test run has not built it yet.
pub fn workspace_bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps, binaries (benchmarks
    // included) in target/<profile>.
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut profile_dir = exe
        .parent()
        .unwrap_or_else(|| panic!("unexpected path {}", exe.display()))
        .to_path_buf();
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir.pop();
    }
    let bin = profile_dir.join(name);
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock();
    // A benchmark (release) always asks cargo, which is a no-op when the
    // binary is fresh: `cargo run --bin cached-runs` does not rebuild the
    // operator it measures, and a stale one measures old code.
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    if release || !bin.exists() {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--bin", name])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        if release {
            cmd.arg("--release");
        }
        let st = cmd
            .status()
            .unwrap_or_else(|e| panic!("running cargo build: {e}"));
        assert!(st.success(), "cargo build --bin {name} failed");
    }
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

impl Drop for Namespace<'_> {
    fn drop(&mut self) {
        // Without a controller manager, a namespace never finishes deleting;
        // its objects go when the private cluster does. On a real cluster
        // this cleans up.
        let _ = self
            .cluster
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// How a test starts `simcache-operator serve` with its controllers on a
/// cluster: watching (and leading in) one namespace, over PostgreSQL.
pub struct OperatorLaunch<'a> {
    pub bin: &'a Path,
    pub kubeconfig: &'a Path,
    pub namespace: &'a str,
    pub db_url: &'a str,
    pub runs_dir: &'a Path,
    /// `0` picks a free port.
    pub port: u16,
    /// More flags (e.g. `--sweep-seconds 1`).
    pub extra: &'a [&'a str],
    /// RUST_LOG for the operator.
    pub log: &'a str,
}

/// The `admin` password test operators start with (their console logins).
pub const TEST_ADMIN_PASSWORD: &str = "test-admin-password";

impl OperatorLaunch<'_> {
    pub async fn spawn(&self) -> crate::ServerProcess {
        let port = self.port.to_string();
        let runs = self.runs_dir.display().to_string();
        let kubeconfig = self.kubeconfig.display().to_string();
        let mut args = vec![
            "serve",
            "--backend",
            "postgresql",
            "--port",
            &port,
            "--run-db-base-path",
            &runs,
            "--watch-namespace",
            self.namespace,
            "--leader-namespace",
            self.namespace,
        ];
        args.extend_from_slice(self.extra);
        crate::ServerProcess::spawn(
            self.bin,
            &args,
            &[
                ("KUBECONFIG", kubeconfig.as_str()),
                ("SIMCACHE_DB_URL", self.db_url),
                ("SIMCACHE_LOG_FORMAT", "text"),
                ("RUST_LOG", self.log),
                ("SIMCACHE_ADMIN_PASSWORD", TEST_ADMIN_PASSWORD),
            ],
        )
        .await
    }
}

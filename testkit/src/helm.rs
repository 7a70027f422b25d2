//! Real Helm for the chart tests: Helm's own Go library through the PyPI
//! package `helm-sdkpy`, installed once per machine into
//! `~/.cache/simcache/helm-sdkpy-<version>` by `testkit/helm/install-helm-sdkpy.sh`
//! (`SIMCACHE_HELM_PYTHON` names a Python that already has it). When it
//! cannot be installed the tests FAIL saying why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const VERSION: &str = "0.1.32";

pub struct Helm {
    python: PathBuf,
    driver: PathBuf,
}

static HELM: OnceLock<Result<Helm, String>> = OnceLock::new();

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The chart in this repository.
pub fn chart_dir() -> PathBuf {
    tests_dir().join("../charts/simcache")
}

/// A copy of the chart that installs on the test API server (1.20, below the
/// chart's `kubeVersion`: the test node plays a kubelet that runs sidecars
/// natively). The copy lives as long as the returned directory.
pub fn chart_for_test_apiserver() -> (tempfile::TempDir, PathBuf) {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("simcache");
    copy(&chart_dir(), &chart);
    let meta = chart.join("Chart.yaml");
    let text = std::fs::read_to_string(&meta).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("kubeVersion:"))
        .expect("the chart declares kubeVersion");
    std::fs::write(&meta, text.replace(line, "kubeVersion: \">=1.20.0-0\"")).unwrap();
    (dir, chart)
}

/// Helm for this test binary; panics with the reason when it is missing.
pub fn helm() -> &'static Helm {
    match HELM.get_or_init(provision) {
        Ok(h) => h,
        Err(e) => panic!("Helm (helm-sdkpy) is not available for the chart tests: {e}"),
    }
}

fn provision() -> Result<Helm, String> {
    let driver = tests_dir().join("helm/helm.py");
    if let Ok(p) = std::env::var("SIMCACHE_HELM_PYTHON")
        && !p.is_empty()
    {
        return Ok(Helm {
            python: PathBuf::from(p),
            driver,
        });
    }
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let dir = PathBuf::from(home)
        .join(".cache/simcache")
        .join(format!("helm-sdkpy-{VERSION}"));
    let out = Command::new("bash")
        .arg(tests_dir().join("helm/install-helm-sdkpy.sh"))
        .arg(&dir)
        .env("HELM_SDKPY_VERSION", VERSION)
        .output()
        .map_err(|e| format!("running install-helm-sdkpy.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "testkit/helm/install-helm-sdkpy.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(Helm {
        python: dir.join("venv/bin/python"),
        driver,
    })
}

/// A refused Helm action: Helm's own message.
#[derive(Debug)]
pub struct HelmError(pub String);

impl Helm {
    fn call(&self, args: &[&str]) -> Result<Value, HelmError> {
        let out = Command::new(&self.python)
            .arg(&self.driver)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.python.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "helm.py {args:?} printed no JSON ({e}): {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        match v.get("error").and_then(Value::as_str) {
            Some(e) if !out.status.success() => Err(HelmError(e.to_string())),
            _ => Ok(v),
        }
    }

    /// `helm lint`: Helm's messages (Severity 1 info, 2 warning, 3 error).
    pub fn lint(&self, chart: &Path) -> Value {
        self.call(&["lint", &chart.display().to_string()])
            .unwrap_or_else(|e| panic!("helm lint: {}", e.0))
    }

    /// `helm install` (without waiting) into `namespace` of the cluster
    /// behind `kubeconfig`: the release, including its rendered manifest.
    /// The test cluster's CRDs come from `install_crds` (kubectl), shared by
    /// every test: unless `values` says otherwise, the release leaves them
    /// alone (`crds.install=false`).
    pub fn install(
        &self,
        kubeconfig: &Path,
        namespace: &str,
        release: &str,
        chart: &Path,
        values: &Value,
    ) -> Result<Value, HelmError> {
        self.release_action(
            "install", kubeconfig, namespace, release, chart, values, false,
        )
    }

    /// `helm install --take-ownership`: adopts objects that exist without
    /// Helm's ownership (the kubectl-applied CRDs).
    pub fn install_owning(
        &self,
        kubeconfig: &Path,
        namespace: &str,
        release: &str,
        chart: &Path,
        values: &Value,
    ) -> Result<Value, HelmError> {
        self.release_action(
            "install", kubeconfig, namespace, release, chart, values, true,
        )
    }

    /// `helm upgrade` (without waiting).
    pub fn upgrade(
        &self,
        kubeconfig: &Path,
        namespace: &str,
        release: &str,
        chart: &Path,
        values: &Value,
    ) -> Result<Value, HelmError> {
        self.release_action(
            "upgrade", kubeconfig, namespace, release, chart, values, false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn release_action(
        &self,
        action: &str,
        kubeconfig: &Path,
        namespace: &str,
        release: &str,
        chart: &Path,
        values: &Value,
        take_ownership: bool,
    ) -> Result<Value, HelmError> {
        let mut values = values.clone();
        if values.get("crds").is_none() && values.is_object() {
            values["crds"] = serde_json::json!({"install": false});
        }
        let (chart, kubeconfig, values) = (
            chart.display().to_string(),
            kubeconfig.display().to_string(),
            values.to_string(),
        );
        let mut args = vec![
            action,
            &chart,
            "--kubeconfig",
            &kubeconfig,
            "--namespace",
            namespace,
            "--release",
            release,
            "--values",
            &values,
        ];
        if take_ownership {
            args.push("--take-ownership");
        }
        self.call(&args)
    }

    pub fn uninstall(&self, kubeconfig: &Path, namespace: &str, release: &str) {
        let _ = self.call(&[
            "uninstall",
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--namespace",
            namespace,
            "--release",
            release,
        ]);
    }
}

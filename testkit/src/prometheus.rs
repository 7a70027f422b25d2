//! Prometheus and promtool from Debian's `prometheus` package, installed by
//! `testkit/prometheus/install-prometheus.sh` into `~/.cache/simcache/` on
//! first use. A test that needs them FAILS with an install hint when they
//! cannot be had; it never skips.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

const HINT: &str = "Prometheus' promtool is needed: testkit/prometheus/install-prometheus.sh \
    fetches Debian's prometheus package (apt-get download, no root once the package lists \
    exist), or `sudo apt-get install prometheus`.";

/// The directory holding `usr/bin/promtool` and `usr/bin/prometheus`.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = ROOT.get_or_init(|| {
        let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
        let dir = PathBuf::from(home).join(".cache/simcache/prometheus");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prometheus/install-prometheus.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg(&dir)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}{}",
                script.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir)
    });
    match r {
        Ok(d) => d,
        Err(e) => panic!("{e}\n{HINT}"),
    }
}

pub fn promtool() -> PathBuf {
    root().join("usr/bin/promtool")
}

pub fn prometheus() -> PathBuf {
    root().join("usr/bin/prometheus")
}

/// Runs promtool; its exit status and everything it printed.
pub fn run_promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new(promtool())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running promtool: {e}\n{HINT}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

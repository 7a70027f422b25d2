//! The Kubernetes version simcache needs: 1.29, where native sidecars
//! (init containers with `restartPolicy: Always`) are on by default. Older
//! API servers get a warning and `simcache_operator_kubernetes_version_supported 0`;
//! the test API server (1.20) runs only because the test node plays the kubelet.

use kube::Client;

use crate::metrics::ControllerMetrics;

/// The oldest supported Kubernetes (major, minor). The chart's `kubeVersion`
/// and docs/operations.md say the same; a test checks the chart.
pub const MINIMUM: (u32, u32) = (1, 29);

/// Whether an API server reporting `major`.`minor` (e.g. "1", "30+") is supported.
pub fn supported(major: &str, minor: &str) -> bool {
    let num = |s: &str| s.trim_end_matches('+').parse::<u32>().unwrap_or(0);
    (num(major), num(minor)) >= MINIMUM
}

/// Asks the API server its version, warns below the minimum and sets the
/// gauge. Returns whether it is supported (the sidecar then gets a startup
/// probe, which older servers refuse on init containers).
pub async fn check(client: &Client, metrics: &ControllerMetrics) -> Result<bool, kube::Error> {
    let v = client.apiserver_version().await?;
    let ok = supported(&v.major, &v.minor);
    metrics.kubernetes_supported.set(i64::from(ok));
    if ok {
        tracing::info!(version = v.git_version, "Kubernetes API server");
    } else {
        tracing::warn!(
            version = v.git_version,
            minimum = format!("{}.{}", MINIMUM.0, MINIMUM.1),
            "this Kubernetes is older than simcache supports: simulation pods rely on native \
             sidecars (1.29+); without them a pod's sidecar keeps it from finishing"
        );
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_from_1_29() {
        assert!(supported("1", "29"));
        assert!(supported("1", "30+"));
        assert!(supported("2", "0"));
        assert!(!supported("1", "28"));
        assert!(!supported("1", "20"));
        assert!(!supported("1", "27+"));
        assert!(!supported("", "x"));
    }
}

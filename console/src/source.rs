//! Where the console reads sweeps and cluster objects from: a [`Source`]
//! handed in by the binary that serves it (the operator's view of the
//! cluster, or local mode's records of `simcache run`). Either way a sweep
//! arrives as a [`SweepView`], so the pages, tables and plots have one code
//! path.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Why a source could not answer: what it was doing, and what failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The cluster's API server did not answer.
    #[error("{doing}: {detail}")]
    Cluster { doing: String, detail: String },
    /// A local record could not be read or parsed.
    #[error("{doing}: {detail}")]
    Record { doing: String, detail: String },
}

impl SourceError {
    pub fn cluster(doing: impl Into<String>, e: impl std::fmt::Display) -> Self {
        SourceError::Cluster {
            doing: doing.into(),
            detail: e.to_string(),
        }
    }

    pub fn record(doing: impl Into<String>, e: impl std::fmt::Display) -> Self {
        SourceError::Record {
            doing: doing.into(),
            detail: e.to_string(),
        }
    }
}

#[async_trait]
pub trait Source: Send + Sync {
    /// Every sweep, without points.
    async fn list(&self) -> Result<Vec<SweepView>, SourceError>;
    /// One sweep with its points, or None.
    async fn get(&self, namespace: &str, name: &str)
    -> Result<Option<Arc<SweepView>>, SourceError>;
    /// Objects of a kind as {namespace, name, spec, status}; none where
    /// there is no cluster.
    async fn resources(&self, _kind: ResourceKind) -> Result<Vec<Value>, SourceError> {
        Ok(Vec::new())
    }
    /// The conditions of the SimulationRun whose attempt made `execution_id`,
    /// oldest transition first; None where there is no such run here.
    async fn run_conditions(&self, _execution_id: &str) -> Result<Option<Vec<Value>>, SourceError> {
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
        && is_object_name(name);
    ok.then(|| (ns.to_string(), name.to_string()))
}

/// The namespace local sweeps are shown in.
pub const LOCAL_NAMESPACE: &str = "local";

/// A Kubernetes object name: nothing that could leave a folder when used
/// as a file name.
pub fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(is_object_name("grid-1"));
        for bad in ["", "../x", "a/b", ".hidden", "A", "x%2f"] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }
}

//! Local mode's records of sweeps (`<home>/sweeps/<name>.json`, written by
//! `simcache run`) as the console's sweep [`Source`]: `simcache ui` hands
//! one to the console.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde_json::{Value, json};
use simcache_console::source::{
    LOCAL_NAMESPACE, Source, SourceError, SweepPoint, SweepView, is_object_name,
};

use super::{Ended, Outcome};

/// What the console shows of a sweep `simcache run` ran (kept in its record).
pub fn sweep_view(name: &str, version: Option<String>, outcomes: &[Outcome]) -> SweepView {
    SweepView {
        namespace: LOCAL_NAMESPACE.into(),
        name: name.to_string(),
        simulation: outcomes
            .first()
            .map(|o| o.simulation.clone())
            .unwrap_or_default(),
        version,
        status: local_status(outcomes),
        points: local_points(outcomes),
    }
}

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

    fn read(&self, path: &std::path::Path) -> Result<Option<Arc<SweepView>>, SourceError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(SourceError::record(
                    format!("reading {}", path.display()),
                    e,
                ));
            }
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
            Err(e) => {
                return Err(SourceError::record(
                    format!("reading {}", path.display()),
                    e,
                ));
            }
        };
        let doc: Value = serde_json::from_str(&text)
            .map_err(|e| SourceError::record(format!("{} is not JSON", path.display()), e))?;
        // Records from before the console carry no `view`: not an error,
        // just nothing to show until the sweep is run again.
        let Some(view) = doc.get("view") else {
            return Ok(None);
        };
        let view: Arc<SweepView> = Arc::new(
            serde_json::from_value(view.clone())
                .map_err(|e| SourceError::record(path.display().to_string(), e))?,
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
    async fn list(&self) -> Result<Vec<SweepView>, SourceError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(SourceError::record(
                    format!("reading {}", self.dir.display()),
                    e,
                ));
            }
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

    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Arc<SweepView>>, SourceError> {
        if namespace != LOCAL_NAMESPACE || !is_object_name(name) {
            return Ok(None);
        }
        self.read(&self.dir.join(format!("{name}.json")))
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
}

//! Introspection: reading a finished run's database into a result record
//! (values, declared parameter schemas, status, provenance, files).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use simcache_rundb::{RunDb, RunDbError, SCHEMA_VERSION, StoredValue};
use simcache_store::clock::parse_timestamp_ms;
use simcache_store::results::filter::ParamClass;
use simcache_store::results::{ParamDef, ResultFile, ResultRecord};

#[derive(Debug, thiserror::Error)]
pub enum IntrospectError {
    #[error("run database {0} not found")]
    Missing(String),
    #[error("run database {path} belongs to execution {found:?}, not {expected:?}")]
    WrongRun {
        path: String,
        expected: String,
        found: String,
    },
    #[error("run database {0} has not been initialized (no run_metadata row)")]
    Empty(String),
    #[error("cannot read run database {path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: RunDbError,
    },
}

fn definitions(class: ParamClass, values: &BTreeMap<String, StoredValue>) -> Vec<ParamDef> {
    values
        .iter()
        .map(|(name, v)| ParamDef {
            class,
            name: name.clone(),
            param_type: v
                .known_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_else(|| v.value_type.clone()),
            description: v.description.clone(),
            units: v.units.clone(),
            min: v.min,
            max: v.max,
            default: v.default.clone(),
        })
        .collect()
}

/// Reads the run database at `path`. When `expected_id` is given the file
/// must belong to that execution. Files in an older schema (sim2l's) are
/// migrated in a private copy; the original is never written.
pub fn introspect(path: &Path, expected_id: Option<&str>) -> Result<ResultRecord, IntrospectError> {
    let shown = path.display().to_string();
    let unreadable = |source| IntrospectError::Unreadable {
        path: shown.clone(),
        source,
    };
    let version = match RunDb::file_schema_version(path) {
        Ok(v) => v,
        Err(RunDbError::NotFound(_)) => return Err(IntrospectError::Missing(shown)),
        Err(e) => return Err(unreadable(e)),
    };
    let _copy_dir;
    let db = if version == SCHEMA_VERSION {
        match RunDb::open_read_only(path) {
            Ok(db) => db,
            Err(RunDbError::NotInitialized) => return Err(IntrospectError::Empty(shown)),
            Err(e) => return Err(unreadable(e)),
        }
    } else {
        let dir =
            tempfile::tempdir().map_err(|e| unreadable(RunDbError::Invalid(e.to_string())))?;
        let copy = dir.path().join("run.db");
        std::fs::copy(path, &copy).map_err(|e| unreadable(RunDbError::Invalid(e.to_string())))?;
        let id = expected_id.unwrap_or("migrating");
        let db = RunDb::open(&copy, id).map_err(unreadable)?;
        _copy_dir = dir;
        db
    };
    let summary = db
        .get_summary()
        .map_err(unreadable)?
        .ok_or_else(|| IntrospectError::Empty(shown.clone()))?;
    if let Some(e) = expected_id
        && e != summary.execution_id
    {
        return Err(IntrospectError::WrongRun {
            path: shown,
            expected: e.to_string(),
            found: summary.execution_id,
        });
    }
    let inputs = db.get_inputs().map_err(unreadable)?;
    let outputs = db.get_outputs().map_err(unreadable)?;
    let provenance = db.get_provenance().map_err(unreadable)?;
    let files = db
        .get_artifacts()
        .map_err(unreadable)?
        .into_iter()
        .map(|a| ResultFile {
            name: a.name,
            size_bytes: a.size_bytes,
            category: a.category,
            content_type: a.content_type,
            sha256: a.sha256,
        })
        .collect();
    let mut defs = definitions(ParamClass::Input, &inputs);
    defs.extend(definitions(ParamClass::Output, &outputs));
    Ok(ResultRecord {
        execution_id: summary.execution_id.clone(),
        simulation_name: summary.simulation_name.clone(),
        simulation_version: summary.simulation_version.clone(),
        squid_id: summary.squid_id.clone(),
        inputs: inputs.into_iter().map(|(k, v)| (k, v.value)).collect(),
        outputs: outputs.into_iter().map(|(k, v)| (k, v.value)).collect(),
        definitions: defs,
        status: summary.status.clone(),
        duration_seconds: summary.duration_seconds,
        error_message: summary.error_message.clone(),
        completed_at_ms: summary.completed_at.as_deref().and_then(parse_timestamp_ms),
        run_db_path: Some(path.display().to_string()),
        metadata: Some(json!({
            "executor_type": summary.executor_type,
            "cache_key": summary.cache_key,
            "cache_hit": summary.cache_hit,
            "started_at": summary.started_at,
            "log_count": summary.log_count,
            "error_count": summary.error_count,
            "warning_count": summary.warning_count,
            "metric_count": summary.metric_count,
            "artifact_count": summary.artifact_count,
            "run_db_size_bytes": std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        })),
        provenance: provenance.map(|p| serde_json::to_value(p).unwrap_or_default()),
        files,
    })
}

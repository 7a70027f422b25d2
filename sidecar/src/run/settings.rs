//! Building a [`RunConfig`] from the command line and environment.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Map, Value};
use simcache_rundb::{
    DEFAULT_ENV_ALLOW_LIST, Provenance, RunInit, RunSchema, capture_environment, default_base_path,
    run_db_path,
};

use super::RunConfig;
use crate::config::RunArgs;

/// A JSON document given as a file path or inline (starting with `{`).
fn json_arg(what: &str, arg: &str) -> anyhow::Result<Value> {
    let text = if arg.trim_start().starts_with('{') {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("reading the {what} file {arg}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("the {what} is not valid JSON"))
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
}

/// A fresh execution id: time plus randomness, valid as a file name.
pub fn new_execution_id() -> Result<String, simcache_store::random::RandomError> {
    let b = simcache_store::random::bytes::<4>()?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(format!("run-{secs}-{}", hex::encode(b)))
}

impl RunArgs {
    /// The run to record, or `None` when no execution id is given.
    /// `executor` names who runs it (`local`, `kubernetes`); `command` is
    /// recorded as provenance.
    pub fn to_run_config(
        &self,
        execution_id: Option<String>,
        executor: &str,
        token: Option<String>,
        command: &[String],
    ) -> anyhow::Result<Option<RunConfig>> {
        let Some(id) = execution_id.or_else(|| self.execution_id.clone()) else {
            return Ok(None);
        };
        simcache_rundb::validate_execution_id(&id)?;
        let base = self
            .run_db_base_path
            .clone()
            .unwrap_or_else(default_base_path);
        let db_path = match &self.run_db_path {
            Some(p) => p.clone(),
            None => run_db_path(&base, &id)?,
        };
        let schema: RunSchema = match &self.schema {
            Some(s) => serde_json::from_value(json_arg("schema", s)?).context(
                "the schema must be {\"inputs\": {name: spec}, \"outputs\": {name: spec}}",
            )?,
            None => RunSchema::default(),
        };
        let inputs: Option<Map<String, Value>> = match &self.input_values {
            Some(s) => match json_arg("inputs", s)? {
                Value::Object(m) => Some(m),
                _ => bail!("the inputs must be a JSON object of name: value"),
            },
            None => None,
        };
        let (Some(name), Some(version)) = (&self.simulation_name, &self.simulation_version) else {
            bail!(
                "recording a run needs --simulation-name and --simulation-version (SIMCACHE_SIMULATION_NAME/VERSION)"
            );
        };
        let mut init = RunInit::new(name.clone(), version.clone());
        init.executor_type = Some(executor.to_string());
        init.cache_key = self.cache_key.clone();
        let allow: Vec<&str> = DEFAULT_ENV_ALLOW_LIST
            .iter()
            .copied()
            .chain(self.env_allow.iter().map(String::as_str))
            .collect();
        let provenance = Provenance {
            host: host_name(),
            image: self.image.clone(),
            image_digest: self.image_digest.clone(),
            command: command.to_vec(),
            environment: capture_environment(&allow, std::env::vars()),
            parent_execution_ids: self.parent_execution_ids.clone(),
            input_hash: self.input_hash.clone(),
        };
        Ok(Some(RunConfig {
            execution_id: id,
            db_path,
            init,
            schema,
            inputs,
            inputs_file: self.inputs_file.clone(),
            outputs_file: self.outputs_file.clone(),
            token,
            provenance,
            max_artifact_bytes: self.max_artifact_bytes,
        }))
    }
}

/// `{dir}/{id}.{suffix}`: where `exec` puts the inputs/outputs files by default.
pub fn beside(db_path: &Path, suffix: &str) -> PathBuf {
    let stem = db_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    db_path.with_file_name(format!("{stem}.{suffix}"))
}

//! The run this sidecar records: its run database, the declared schema, and
//! the contract with the simulation program (HTTP, inputs/outputs files,
//! captured output).

pub mod ingest;
pub mod program;
pub mod recorded;
pub mod settings;
pub mod values;

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use simcache_rundb::{
    Direction, LogLevel, LogLine, Provenance, RunDb, RunDbError, RunInit, RunSchema, RunStatus,
    RunSummary,
};

use values::{ValueWrite, parse_values};

/// Everything the sidecar needs to record one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub execution_id: String,
    pub db_path: PathBuf,
    pub init: RunInit,
    pub schema: RunSchema,
    /// Inputs recorded at start (checked against the schema, defaults applied).
    pub inputs: Option<Map<String, Value>>,
    /// Where the inputs JSON is written for the program (`SIMCACHE_INPUTS`).
    pub inputs_file: Option<PathBuf>,
    /// Where the program may leave its outputs as JSON (`SIMCACHE_OUTPUTS`).
    pub outputs_file: Option<PathBuf>,
    /// The per-run token the program presents; `None` only with `--no-auth`.
    pub token: Option<String>,
    pub provenance: Provenance,
    pub max_artifact_bytes: u64,
}

/// Why a run could not be recorded as asked.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Db(#[from] RunDbError),
    /// The caller's request was wrong; the message names what.
    #[error("{0}")]
    Invalid(String),
    /// An input or the schema itself does not fit.
    #[error(transparent)]
    Param(#[from] simcache_rundb::ParamError),
    /// A body of inputs or outputs does not fit.
    #[error(transparent)]
    Values(#[from] values::ValuesError),
    /// The program's outputs file does not fit.
    #[error("outputs file {}: {why}", path.display())]
    OutputsFile {
        path: PathBuf,
        #[source]
        why: Box<values::ValuesError>,
    },
    #[error("run database task failed: {0}")]
    Task(String),
}

impl From<RunError> for simcache_web::ApiError {
    fn from(e: RunError) -> Self {
        use axum::http::StatusCode;
        use simcache_web::ApiError;
        match e {
            RunError::Invalid(m) => ApiError::bad_request(m),
            RunError::Param(p) => ApiError::bad_request(p.to_string()),
            e @ (RunError::Values(_) | RunError::OutputsFile { .. }) => {
                ApiError::bad_request(e.to_string())
            }
            RunError::Db(d) => match d {
                RunDbError::Invalid(m) | RunDbError::InvalidExecutionId(m) => {
                    ApiError::bad_request(m)
                }
                RunDbError::NotFound(_) => ApiError::not_found(d.to_string()),
                RunDbError::Completed(_)
                | RunDbError::AlreadyInitialized
                | RunDbError::NotInitialized => ApiError::new(StatusCode::CONFLICT, d.to_string()),
                other => {
                    tracing::error!(error = %other, "run database failure");
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "run database failure")
                }
            },
            RunError::Task(m) => {
                tracing::error!(error = %m, "run database task failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "run database failure")
            }
        }
    }
}

/// The open run, shared by the HTTP handlers and the program runner.
pub struct RunService {
    db: Arc<Mutex<RunDb>>,
    pub schema: RunSchema,
    pub execution_id: String,
    pub outputs_file: Option<PathBuf>,
    pub inputs_file: Option<PathBuf>,
    pub max_artifact_bytes: u64,
    /// SHA-256 of the token, compared in constant time.
    token_hash: Option<[u8; 32]>,
    /// The recorded inputs (what the program is handed).
    pub inputs: Vec<ValueWrite>,
    /// Where spooled uploads and snapshots go: next to the run DB, so on the
    /// same volume.
    pub work_dir: PathBuf,
}

fn hash_token(t: &str) -> [u8; 32] {
    Sha256::digest(t.as_bytes()).into()
}

impl RunService {
    /// Opens (or, after a sidecar restart, resumes) the run database: records
    /// the start, the inputs and the provenance once, writes the inputs file.
    pub fn open(cfg: &RunConfig) -> Result<RunService, RunError> {
        cfg.schema.check_self()?;
        let mut db = RunDb::open(&cfg.db_path, &cfg.execution_id)?;
        let resolved = match &cfg.inputs {
            None => Vec::new(),
            Some(given) if !cfg.schema.inputs.is_empty() => {
                let full = cfg.schema.resolve_inputs(given)?;
                let obj = Value::Object(full.into_iter().collect());
                parse_values(&obj, &cfg.schema, Direction::Input)?
            }
            Some(given) if given.is_empty() => Vec::new(),
            Some(given) => {
                parse_values(&Value::Object(given.clone()), &cfg.schema, Direction::Input)?
            }
        };
        if db.status().is_none() {
            db.initialize_run(&cfg.init)?;
            if !resolved.is_empty() {
                let rows: Vec<_> = resolved
                    .iter()
                    .map(|w| (w.name.as_str(), &w.value, &w.spec))
                    .collect();
                db.save_inputs(&rows)?;
            }
            db.record_provenance(&cfg.provenance)?;
        }
        if let Some(path) = &cfg.inputs_file {
            let doc = values::inputs_document(&resolved);
            let text =
                serde_json::to_vec_pretty(&doc).map_err(|e| RunError::Invalid(e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| RunError::Invalid(format!("{}: {e}", dir.display())))?;
            }
            std::fs::write(path, text)
                .map_err(|e| RunError::Invalid(format!("{}: {e}", path.display())))?;
        }
        Ok(RunService {
            db: Arc::new(Mutex::new(db)),
            schema: cfg.schema.clone(),
            execution_id: cfg.execution_id.clone(),
            outputs_file: cfg.outputs_file.clone(),
            inputs_file: cfg.inputs_file.clone(),
            max_artifact_bytes: cfg.max_artifact_bytes,
            token_hash: cfg.token.as_deref().map(hash_token),
            inputs: resolved,
            work_dir: cfg
                .db_path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(".")),
        })
    }

    /// True when `presented` is the run token (always true without one).
    pub fn token_matches(&self, presented: Option<&str>) -> bool {
        let Some(expected) = &self.token_hash else {
            return true;
        };
        let Some(p) = presented else { return false };
        let got = hash_token(p);
        got.iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    pub fn requires_token(&self) -> bool {
        self.token_hash.is_some()
    }

    /// Runs `f` on the run database on a blocking thread.
    pub async fn with_db<R, F>(&self, f: F) -> Result<R, RunError>
    where
        F: FnOnce(&mut RunDb) -> Result<R, RunError> + Send + 'static,
        R: Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&mut db.lock()))
            .await
            .map_err(|e| RunError::Task(e.to_string()))?
    }

    /// Checks and stores inputs or outputs from a request body or file.
    pub async fn save_values(&self, d: Direction, body: Value) -> Result<usize, RunError> {
        let writes = parse_values(&body, &self.schema, d)?;
        let n = writes.len();
        self.with_db(move |db| {
            let rows: Vec<_> = writes
                .iter()
                .map(|w| (w.name.as_str(), &w.value, &w.spec))
                .collect();
            match d {
                Direction::Input => db.save_inputs(&rows)?,
                Direction::Output => db.save_outputs(&rows)?,
            }
            Ok(n)
        })
        .await
    }

    /// Reads the outputs file if the program left one. Missing file: `Ok(false)`.
    pub async fn collect_outputs_file(&self) -> Result<bool, RunError> {
        let Some(path) = self.outputs_file.clone() else {
            return Ok(false);
        };
        let text = match tokio::fs::read(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(RunError::Invalid(format!(
                    "cannot read outputs file {}: {e}",
                    path.display()
                )));
            }
        };
        let body: Value = serde_json::from_slice(&text).map_err(|e| {
            RunError::Invalid(format!(
                "outputs file {} is not valid JSON: {e}",
                path.display()
            ))
        })?;
        self.save_values(Direction::Output, body)
            .await
            .map_err(|e| match e {
                RunError::Invalid(m) => {
                    RunError::Invalid(format!("outputs file {}: {m}", path.display()))
                }
                RunError::Values(why) => RunError::OutputsFile {
                    path,
                    why: Box::new(why),
                },
                other => other,
            })?;
        Ok(true)
    }

    /// Declared outputs that have not been stored.
    pub async fn missing_outputs(&self) -> Result<Vec<String>, RunError> {
        let declared: Vec<String> = self.schema.outputs.keys().cloned().collect();
        self.with_db(move |db| {
            let have = db.get_outputs()?;
            Ok(declared
                .into_iter()
                .filter(|n| !have.contains_key(n))
                .collect())
        })
        .await
    }

    /// Completes the run as asked by the program (HTTP). Completing as
    /// `completed` first reads the outputs file, and is refused (nothing
    /// changes) while declared outputs are missing.
    pub async fn complete(
        &self,
        status: RunStatus,
        duration: Option<f64>,
        error: Option<String>,
    ) -> Result<RunSummary, RunError> {
        let current = self.with_db(|db| Ok(db.status())).await?;
        if let Some(s) = current.filter(|s| *s != RunStatus::Running) {
            return Err(RunError::Db(RunDbError::Completed(s.to_string())));
        }
        if status == RunStatus::Completed {
            self.collect_outputs_file().await?;
            let missing = self.missing_outputs().await?;
            if !missing.is_empty() {
                return Err(RunError::Invalid(format!(
                    "cannot complete: declared outputs not yet stored: {}",
                    missing.join(", ")
                )));
            }
        }
        self.with_db(move |db| {
            db.complete_run(status, duration, error.as_deref(), None)?;
            db.get_summary()?
                .ok_or(RunError::Db(RunDbError::NotInitialized))
        })
        .await
    }

    /// Ends the run after the program stopped by itself: collects the outputs
    /// file and completes as `completed` when it exited cleanly with every
    /// declared output, else as `failed` with the reason. A run already
    /// completed over HTTP is left as it is. `failure` says why the program
    /// did not exit cleanly (none when it did).
    pub async fn finish(&self, failure: Option<String>) -> Result<RunSummary, RunError> {
        let already = self.with_db(|db| Ok(db.status())).await?;
        if already.is_some_and(|s| s != RunStatus::Running) {
            return self.summary().await;
        }
        let mut failure = failure;
        if let Err(e) = self.collect_outputs_file().await {
            failure.get_or_insert(e.to_string());
        }
        if failure.is_none() {
            let missing = self.missing_outputs().await?;
            if !missing.is_empty() {
                failure = Some(format!(
                    "declared outputs were not produced: {}",
                    missing.join(", ")
                ));
            }
        }
        self.with_db(move |db| {
            let status = match &failure {
                None => RunStatus::Completed,
                Some(why) => {
                    db.log(&LogLine::new(LogLevel::Error, why.clone()))?;
                    RunStatus::Failed
                }
            };
            db.complete_run(status, None, failure.as_deref(), None)?;
            db.get_summary()?
                .ok_or(RunError::Db(RunDbError::NotInitialized))
        })
        .await
    }

    pub async fn summary(&self) -> Result<RunSummary, RunError> {
        self.with_db(|db| {
            db.get_summary()?
                .ok_or(RunError::Db(RunDbError::NotInitialized))
        })
        .await
    }
}

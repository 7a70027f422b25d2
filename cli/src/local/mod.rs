//! Local mode: the same Simulation and SimulationRun YAML a user would
//! `kubectl apply`, run on this machine with no cluster and no Postgres.
//! Inputs are checked and hashed exactly as the controller does, each miss
//! runs the simulation's command as a local process with the sidecar
//! in-process (the same run database and run API as in a pod), the run is
//! introspected into a SQLite catalog/results store, and its result cached;
//! a repeat is served from that cache.

pub mod records;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use simcache_crds::{CacheMode, Simulation, SimulationRun, SimulationRunSpec, SimulationSweep};
use simcache_rundb::{Provenance, RunInit};
use simcache_sidecar::run::RunConfig;
use simcache_sidecar::run::recorded::{Program, record_program};
use simcache_store::cache::HitDelta;
use simcache_store::catalog::{CacheOutcome, Registration};
use simcache_store::clock::now_ms;
use simcache_store::results::{ResultQuery, StoredResult, Upsert};
use simcache_store::{Backend, Stores};

use simcache_core::cache_key::{RunIdentity, catalog_spec, identify, run_schema};
use simcache_core::introspect::introspect;
use simcache_core::record::{self, Completed, Execution, RunKey};
use simcache_core::sweep::points::{expand, run_name};

/// The annotation giving the command to run outside the image (relative
/// paths resolve against the YAML file's folder); else `command` + `args`.
pub const LOCAL_COMMAND: &str = "simcache.io/local-command";

/// A Simulation as read from a file, with that file's folder.
struct LocalSimulation {
    sim: Simulation,
    dir: PathBuf,
}

/// What the files hold.
#[derive(Default)]
struct Manifests {
    simulations: Vec<LocalSimulation>,
    runs: Vec<SimulationRun>,
    /// Each sweep's name and its runs' names, in point order.
    sweeps: Vec<(String, Vec<String>)>,
}

/// The YAML files given, and every `.yaml`/`.yml` file of the folders given.
fn files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Something wrong with the files given (not with running them): a
/// missing file, YAML that does not parse, an unknown kind or field, a
/// sweep that makes no valid points.
#[derive(Debug)]
pub struct BadInput(pub anyhow::Error);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for BadInput {}

fn read_manifests(paths: &[PathBuf]) -> anyhow::Result<Manifests> {
    read_files(paths).map_err(|e| anyhow::Error::new(BadInput(e)))
}

fn read_files(paths: &[PathBuf]) -> anyhow::Result<Manifests> {
    let mut m = Manifests::default();
    for file in files(paths)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("{} is not valid YAML", file.display()))?;
            if v.is_null() {
                continue;
            }
            let what = |e: serde_json::Error| anyhow::anyhow!("{}: {e}", file.display());
            match v.get("kind").and_then(Value::as_str) {
                Some("Simulation") => m.simulations.push(LocalSimulation {
                    sim: serde_json::from_value(v).map_err(what)?,
                    dir: dir.clone(),
                }),
                Some("SimulationRun") => m.runs.push(serde_json::from_value(v).map_err(what)?),
                Some("SimulationSweep") => {
                    let sweep: SimulationSweep = serde_json::from_value(v).map_err(what)?;
                    let runs = sweep_runs(&sweep)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                    m.sweeps.push((
                        sweep.metadata.name.clone().unwrap_or_default(),
                        runs.iter()
                            .filter_map(|r| r.metadata.name.clone())
                            .collect(),
                    ));
                    m.runs.extend(runs);
                }
                // Policies shape the cluster's cache; locally the cache keeps all.
                Some("CachePolicy") => {}
                Some(k) => bail!("{}: kind {k} is not one of ours", file.display()),
                None => bail!("{}: a document without kind", file.display()),
            }
        }
    }
    Ok(m)
}

/// A sweep's runs, as the operator would make them (same names, inputs
/// and run settings).
fn sweep_runs(sweep: &SimulationSweep) -> Result<Vec<SimulationRun>, String> {
    let name = sweep
        .metadata
        .name
        .clone()
        .ok_or("a SimulationSweep without metadata.name")?;
    let points = expand(&sweep.spec).map_err(|e| format!("SimulationSweep {name}: spec.{e}"))?;
    let t = sweep.spec.run_template.clone().unwrap_or_default();
    Ok(points
        .into_iter()
        .map(|p| {
            let mut run = SimulationRun::new(
                &run_name(&name, &p),
                SimulationRunSpec {
                    simulation: sweep.spec.simulation.clone(),
                    inputs: p,
                    cache_mode: t.cache_mode,
                    timeout_seconds: t.timeout_seconds,
                    retry_limit: t.retry_limit,
                    ttl_seconds_after_finished: None,
                    pod: None,
                },
            );
            run.metadata.labels = Some(BTreeMap::from([(
                simcache_core::sweep::LABEL_SWEEP.to_string(),
                name.clone(),
            )]));
            run
        })
        .collect())
}

/// The command a Simulation runs locally, and where.
fn local_command(s: &LocalSimulation) -> anyhow::Result<Vec<String>> {
    let annotated = s
        .sim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOCAL_COMMAND));
    let cmd: Vec<String> = match annotated {
        Some(text) if text.trim_start().starts_with('[') => serde_json::from_str(text)
            .with_context(|| {
                format!("annotation {LOCAL_COMMAND} is not a JSON array of strings")
            })?,
        Some(text) => text.split_whitespace().map(str::to_string).collect(),
        None => s
            .sim
            .spec
            .command
            .iter()
            .chain(&s.sim.spec.args)
            .cloned()
            .collect(),
    };
    if cmd.is_empty() {
        bail!(
            "Simulation {} has no command to run locally (spec.command or the {LOCAL_COMMAND} annotation)",
            s.sim.metadata.name.as_deref().unwrap_or("")
        );
    }
    Ok(cmd)
}

pub fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".simcache")
        .join("local")
}

async fn open(home: &Path) -> anyhow::Result<Stores> {
    Stores::open(
        &Backend::Sqlite {
            path: home.join("simcache.db"),
        },
        "local",
    )
    .await
    .with_context(|| format!("opening the local store under {}", home.display()))
}

fn outputs_text(o: &Value) -> String {
    serde_json::to_string(o).unwrap_or_default()
}

/// How one local run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ended {
    /// Run here; `seconds` it took.
    Computed {
        seconds: f64,
        execution_id: String,
    },
    /// Served from the cache; the producing run took `saved` seconds.
    Cached {
        saved: Option<f64>,
        computed_by: String,
    },
    Failed {
        message: String,
    },
}

/// One run of `local run`, as it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub run: String,
    pub simulation: String,
    pub inputs: BTreeMap<String, Value>,
    pub outputs: Value,
    pub ended: Ended,
}

impl Outcome {
    /// The line `local run` prints for it.
    pub fn line(&self) -> String {
        match &self.ended {
            Ended::Computed {
                seconds,
                execution_id,
            } => format!(
                "Succeeded in {seconds:.2} s (execution {execution_id}): {}",
                outputs_text(&self.outputs)
            ),
            Ended::Cached { saved, computed_by } => format!(
                "Cached (computed by {computed_by}; {}): {}",
                match saved {
                    Some(s) => format!("saved {s:.2} s of computing"),
                    None => "no recomputation".into(),
                },
                outputs_text(&self.outputs)
            ),
            Ended::Failed { message } => format!("FAILED: {message}"),
        }
    }
}

/// Everything one `local run` did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Each sweep in the files, with its runs' names.
    pub sweeps: Vec<(String, Vec<String>)>,
    /// The Simulations in the files (for their inputs' and outputs' units).
    pub simulations: Vec<Simulation>,
}

impl Report {
    pub fn computed(&self) -> usize {
        self.count(|e| matches!(e, Ended::Computed { .. }))
    }
    pub fn cached(&self) -> usize {
        self.count(|e| matches!(e, Ended::Cached { .. }))
    }
    pub fn failed(&self) -> usize {
        self.count(|e| matches!(e, Ended::Failed { .. }))
    }
    /// Seconds of computing the cache saved.
    pub fn seconds_saved(&self) -> f64 {
        self.outcomes
            .iter()
            .filter_map(|o| match &o.ended {
                Ended::Cached { saved, .. } => *saved,
                _ => None,
            })
            .fold(0.0, |a, b| a + b)
    }
    fn count(&self, f: impl Fn(&Ended) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(&o.ended)).count()
    }
    /// `N runs: C computed, H from the cache, F failed; the cache saved S s of computing`.
    pub fn summary(&self) -> String {
        format!(
            "{} runs: {} computed, {} from the cache, {} failed; the cache saved {:.1} s of computing",
            self.outcomes.len(),
            self.computed(),
            self.cached(),
            self.failed(),
            self.seconds_saved()
        )
    }
}

/// What a caller hears while `run_all` works.
pub trait Progress: Sync {
    /// A run's command starts (`tag` is `[i/total] name`).
    fn started(&self, _tag: &str, _command: &[String]) {}
    /// A run ended; `done` of `total` have.
    fn ended(&self, outcome: &Outcome, done: usize, total: usize);
}

/// `local run -f …`: every run in the files (sweeps made into their runs),
/// `jobs` at a time, telling `progress` as they go. The outcomes come back
/// in the files' order.
pub async fn run_all(
    paths: &[PathBuf],
    home: &Path,
    jobs: usize,
    progress: &dyn Progress,
) -> anyhow::Result<Report> {
    use futures_util::StreamExt;
    let m = read_manifests(paths)?;
    if m.runs.is_empty() {
        return Err(anyhow::Error::new(BadInput(anyhow::anyhow!(
            "no SimulationRun or SimulationSweep in the files given"
        ))));
    }
    // As the operator does: every point of a sweep is checked before any
    // run starts, and a bad one fails the input, naming it.
    for run in m.runs.iter().filter(|r| {
        r.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(simcache_core::sweep::LABEL_SWEEP))
    }) {
        let Some(ls) = m
            .simulations
            .iter()
            .find(|s| s.sim.metadata.name.as_deref() == Some(run.spec.simulation.name.as_str()))
        else {
            return Err(anyhow::Error::new(BadInput(anyhow::anyhow!(
                "SimulationSweep: Simulation {:?} is not in the files given",
                run.spec.simulation.name
            ))));
        };
        if let Err(e) = identify(&ls.sim, &run.spec) {
            let sweep = run
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(simcache_core::sweep::LABEL_SWEEP))
                .cloned()
                .unwrap_or_default();
            return Err(anyhow::Error::new(BadInput(anyhow::anyhow!(
                "SimulationSweep {sweep}: point {}: {e}",
                serde_json::to_string(&run.spec.inputs).unwrap_or_default()
            ))));
        }
    }
    let stores = open(home).await?;
    let mut catalog_ids = BTreeMap::new();
    for s in &m.simulations {
        let spec = catalog_spec(&s.sim);
        let id = match stores.catalog.register(&spec, Some("local")).await? {
            Registration::Created(i) | Registration::Unchanged(i) => i,
        };
        catalog_ids.insert(s.sim.metadata.name.clone().unwrap_or_default(), id);
    }
    let total = m.runs.len();
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let workspace = &Workspace {
        stores: &stores,
        home,
        progress,
    };
    let (catalog_ids, finished) = (&catalog_ids, &finished);
    let simulations = &m.simulations;
    let runs = m.runs.iter().enumerate().map(|(i, run)| async move {
        let name = run
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| format!("run-{i}"));
        let tag = format!("[{}/{total}] {name}", i + 1);
        let ended = match simulations
            .iter()
            .find(|s| s.sim.metadata.name.as_deref() == Some(run.spec.simulation.name.as_str()))
        {
            None => Err(anyhow::anyhow!(
                "Simulation {:?} is not in the files given",
                run.spec.simulation.name
            )),
            Some(ls) => {
                run_one(
                    workspace,
                    ls,
                    run,
                    &name,
                    catalog_ids[&run.spec.simulation.name],
                    &tag,
                )
                .await
            }
        };
        let outcome = ended.unwrap_or_else(|e| Outcome {
            run: name.clone(),
            simulation: run.spec.simulation.name.clone(),
            inputs: run.spec.inputs.clone(),
            outputs: Value::Null,
            ended: Ended::Failed {
                message: format!("{e:#}"),
            },
        });
        let n = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        progress.ended(&outcome, n, total);
        (i, outcome)
    });
    let mut outcomes: Vec<(usize, Outcome)> = futures_util::stream::iter(runs)
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    outcomes.sort_by_key(|(i, _)| *i);
    Ok(Report {
        outcomes: outcomes.into_iter().map(|(_, o)| o).collect(),
        sweeps: m.sweeps.clone(),
        simulations: m.simulations.iter().map(|s| s.sim.clone()).collect(),
    })
}

/// One run: from the cache, or run and recorded.
/// What every local run shares.
struct Workspace<'a> {
    stores: &'a Stores,
    home: &'a Path,
    progress: &'a dyn Progress,
}

async fn run_one(
    w: &Workspace<'_>,
    ls: &LocalSimulation,
    run: &SimulationRun,
    name: &str,
    sim_id: i64,
    tag: &str,
) -> anyhow::Result<Outcome> {
    let outcome = |inputs: &BTreeMap<String, Value>, outputs: Value, ended: Ended| Outcome {
        run: name.to_string(),
        simulation: run.spec.simulation.name.clone(),
        inputs: inputs.clone(),
        outputs,
        ended,
    };
    let id = match identify(&ls.sim, &run.spec) {
        Ok(id) => id,
        Err(refusal) => {
            let message = refusal.to_string();
            return Ok(outcome(
                &run.spec.inputs,
                Value::Null,
                Ended::Failed { message },
            ));
        }
    };
    let run_key = id.run_key(sim_id);
    let attempt = Attempt {
        ls,
        run,
        id: &id,
        run_key: &run_key,
        name,
        sim_id,
        tag,
    };
    if run.spec.cache_mode == CacheMode::Use
        && let Some((outputs, ended)) = from_cache(w, &attempt).await?
    {
        return Ok(outcome(&id.inputs, outputs, ended));
    }
    let (outputs, ended) = compute(w, &attempt).await?;
    Ok(outcome(&id.inputs, outputs, ended))
}

/// One run to serve or compute, once its inputs are identified.
struct Attempt<'a> {
    ls: &'a LocalSimulation,
    run: &'a SimulationRun,
    id: &'a RunIdentity,
    run_key: &'a RunKey<'a>,
    name: &'a str,
    sim_id: i64,
    tag: &'a str,
}

/// The cached result of these inputs, if its entry is valid and its run
/// database still exists; the hit is counted and recorded.
async fn from_cache(w: &Workspace<'_>, a: &Attempt<'_>) -> anyhow::Result<Option<(Value, Ended)>> {
    let stores = w.stores;
    let key = &a.id.key;
    let Some(e) = stores.cache.get(key, now_ms()).await? else {
        return Ok(None);
    };
    if !e
        .run_db_path
        .as_deref()
        .is_some_and(|p| Path::new(p).exists())
    {
        return Ok(None);
    }
    let meta = e.metadata.clone().unwrap_or(Value::Null);
    let saved = meta.get("duration_seconds").and_then(Value::as_f64);
    let hit = HitDelta {
        cache_key: key.clone(),
        hits: 1,
        last_accessed_ms: now_ms(),
    };
    stores.cache.record_accesses(&[hit], 0).await?;
    let exec = format!("local.{}.{}.cached.{}", a.name, &a.id.hash[..8], now_ms());
    record(stores, a.run_key, Execution::cache_hit(&exec, &e)).await?;
    let outputs = meta.get("outputs").cloned().unwrap_or(Value::Null);
    let ended = Ended::Cached {
        saved,
        computed_by: e.execution_id.clone(),
    };
    Ok(Some((outputs, ended)))
}

/// How the in-process sidecar records one computing run.
fn run_config(
    a: &Attempt<'_>,
    execution_id: &str,
    command: &[String],
    runs_dir: &Path,
) -> anyhow::Result<RunConfig> {
    let sim = &a.ls.sim;
    let mut init = RunInit::new(a.id.name.clone(), a.id.version.clone());
    init.executor_type = Some("local".into());
    init.cache_key = Some(a.id.key.clone());
    init.simulation_id = Some(a.sim_id);
    Ok(RunConfig {
        db_path: simcache_rundb::run_db_path(runs_dir, execution_id)?,
        execution_id: execution_id.to_string(),
        init,
        schema: run_schema(&sim.spec),
        inputs: Some(a.id.inputs.clone().into_iter().collect()),
        inputs_file: None,
        outputs_file: None,
        token: Some(simcache_store::random::token()?),
        provenance: Provenance {
            host: None,
            image: Some(sim.spec.image.clone()),
            image_digest: sim.spec.image.split_once('@').map(|(_, d)| d.to_string()),
            command: command.to_vec(),
            environment: BTreeMap::new(),
            parent_execution_ids: Vec::new(),
            input_hash: Some(a.id.hash.clone()),
        },
        max_artifact_bytes: simcache_rundb::MAX_ARTIFACT_BYTES,
    })
}

/// Runs the simulation's command as a recorded run, introspects it into
/// the results, records the execution and (unless bypassed) caches it.
async fn compute(w: &Workspace<'_>, a: &Attempt<'_>) -> anyhow::Result<(Value, Ended)> {
    let stores = w.stores;
    let command = local_command(a.ls)?;
    let suffix = simcache_store::random::hex_id::<4>()?;
    let execution_id = format!("local.{}.{}.{suffix}", a.name, &a.id.hash[..8]);
    let rc = run_config(a, &execution_id, &command, &w.home.join("runs"))?;
    w.progress.started(a.tag, &command);
    let started = Instant::now();
    let program = Program {
        command,
        workdir: Some(a.ls.dir.clone()),
        timeout: a
            .run
            .spec
            .timeout_seconds
            .map(|t| Duration::from_secs(t.max(1) as u64)),
    };
    let store = Backend::Sqlite {
        path: w.home.join("simcache.db"),
    };
    let done = record_program(store, rc, &program).await?;
    let wall = started.elapsed().as_secs_f64();
    let path = done.db_path.clone();
    let id = execution_id.clone();
    let rec = tokio::task::spawn_blocking(move || introspect(&path, Some(&id)))
        .await
        .context("introspection task")??;
    let (result_id, _) = stores.results.register(&rec, Upsert::Replace).await?;
    let ok = done.summary.status == "completed";
    let duration = done.summary.duration_seconds.or(Some(wall));
    let outputs = serde_json::to_value(&rec.outputs)?;
    let size = std::fs::metadata(&done.db_path)
        .map(|m| m.len() as i64)
        .unwrap_or(0);
    let cache = match (ok, a.run.spec.cache_mode) {
        (false, _) | (true, CacheMode::Bypass) => CacheOutcome::Skipped,
        (true, _) => CacheOutcome::Populated,
    };
    let completed = Completed {
        duration,
        node: None,
        run_db_path: Some(done.db_path.display().to_string()),
        run_db_size_bytes: Some(size),
        output_count: rec.outputs.len() as i64,
    };
    let execution = Execution::completed(&execution_id, ok, cache, completed);
    record(stores, a.run_key, execution).await?;
    if !ok {
        let message = done
            .summary
            .error_message
            .clone()
            .unwrap_or_else(|| format!("the run ended as {}", done.summary.status));
        return Ok((outputs, Ended::Failed { message }));
    }
    if a.run.spec.cache_mode != CacheMode::Bypass {
        let entry = record::cache_entry(
            a.run_key,
            &execution_id,
            Some(done.db_path.display().to_string()),
            size,
            &outputs,
            Some(result_id),
            &format!("local/{}", a.name),
            duration,
            None,
            now_ms(),
        );
        stores.cache.put(entry).await?;
    }
    let seconds = duration.unwrap_or(wall);
    Ok((
        outputs,
        Ended::Computed {
            seconds,
            execution_id,
        },
    ))
}

async fn record(stores: &Stores, key: &RunKey<'_>, e: Execution<'_>) -> anyhow::Result<()> {
    stores
        .catalog
        .record_execution(&e.record(key, "local", now_ms()))
        .await?;
    Ok(())
}

/// The local store under `home`.
pub async fn open_store(home: &Path) -> anyhow::Result<Stores> {
    open(home).await
}

/// Recorded results, newest first.
pub async fn search_results(
    stores: &Stores,
    simulation: Option<String>,
    limit: i64,
) -> anyhow::Result<Vec<StoredResult>> {
    Ok(stores
        .results
        .search(&ResultQuery {
            simulation_name: simulation,
            simulation_version: None,
            status: None,
            filters: Vec::new(),
            sort: None,
            descending: true,
            limit: limit.clamp(1, 10_000),
            offset: 0,
        })
        .await?)
}

/// A result as the operator API's `/search` shows one (the same keys).
pub fn result_json(r: &StoredResult) -> Value {
    serde_json::json!({
        "execution_id": r.execution_id,
        "simulation_name": r.simulation_name,
        "simulation_version": r.simulation_version,
        "status": r.status,
        "input_params": r.input_params,
        "output_params": r.output_params,
        "duration_seconds": r.duration_seconds,
        "error_message": r.error_message,
    })
}

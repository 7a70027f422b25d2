//! Each command: gather rows (locally or from the API), print them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use crate::local::{self, Ended, Outcome, Progress, Report};
use anyhow::Context;
use clap::CommandFactory;
use serde_json::{Map, Value, json};

use crate::output::{Column, Rows};
use crate::remote::Api;
use crate::{Cli, Command, Failure, SweepCommand};

type Units = BTreeMap<String, String>;

pub async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let home = cli.home.clone().unwrap_or_else(local::default_home);
    let api = match &cli.api {
        Some(url) => Some(
            Api::new(url, cli.session.clone()).map_err(|e| Failure::BadInput(format!("{e:#}")))?,
        ),
        None => None,
    };
    let rows = match cli.command {
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "simcache", &mut std::io::stdout());
            return Ok(());
        }
        Command::Ui {
            host,
            port,
            no_auth,
        } => {
            if api.is_some() {
                return Err(Failure::BadInput(
                    "ui serves this machine's store; a cluster's operator serves the console itself at /ui/"
                        .into(),
                ));
            }
            return crate::ui::serve(&home, std::net::SocketAddr::new(host, port), no_auth)
                .await
                .map_err(Failure::Other);
        }
        Command::Run { files, jobs } => {
            if api.is_some() {
                return Err(Failure::BadInput(
                    "run works on this machine; on a cluster, kubectl apply -f the same files"
                        .into(),
                ));
            }
            return run(&files, &home, jobs, cli.output).await;
        }
        Command::Results { simulation, limit } => match &api {
            Some(api) => remote_results(api, simulation.as_deref(), limit).await?,
            None => local_results(&home, simulation, limit).await?,
        },
        Command::Catalog => match &api {
            Some(api) => remote_catalog(api).await?,
            None => local_catalog(&home).await?,
        },
        Command::Sweep(SweepCommand::Show { name }) => {
            if api.is_some() {
                return Err(Failure::BadInput(format!(
                    "sweep show reads sweeps run on this machine; on a cluster: kubectl get simsweep {name} and kubectl get simrun -l simcache.io/sweep={name}"
                )));
            }
            sweep_show(&home, &name)?
        }
    };
    print_rows(&rows, cli.output)
}

fn print_rows(rows: &Rows, format: crate::output::Format) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    rows.print(format, &mut out).map_err(Failure::Other)?;
    Ok(())
}

// ------------------------------------------------------------------- run

/// Progress as runs end: a bar on a terminal, plain lines otherwise.
struct Shown {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress for Shown {
    fn ended(&self, o: &Outcome, done: usize, total: usize) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                if let Ended::Failed { message } = &o.ended {
                    bar.println(format!("{}: FAILED: {message}", o.run));
                }
            }
            None => eprintln!("[{done}/{total}] {}: {}", o.run, o.line()),
        }
    }
}

async fn run(
    files: &[PathBuf],
    home: &Path,
    jobs: Option<usize>,
    format: crate::output::Format,
) -> Result<(), Failure> {
    if jobs == Some(0) {
        return Err(Failure::BadInput("-j/--jobs: at least 1".into()));
    }
    for f in files {
        if !f.exists() {
            return Err(Failure::BadInput(format!(
                "{}: no such file or folder (give YAML files or a folder of them with -f)",
                f.display()
            )));
        }
    }
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} runs  {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let shown = Shown { bar };
    let report = local::run_all(files, home, jobs, &shown).await?;
    if let Some(b) = &shown.bar {
        b.finish_and_clear();
    }
    save_sweeps(home, &report).map_err(Failure::Other)?;
    let rows = outcome_rows(&report.outcomes, &units_of(&report));
    print_rows(&rows, format)?;
    eprintln!("{}", report.summary());
    if report.failed() > 0 {
        return Err(Failure::RunFailed);
    }
    Ok(())
}

/// Units of every input and output the files' Simulations declare, by
/// `simulation/param`.
fn units_of(report: &Report) -> Units {
    let mut u = Units::new();
    for s in &report.simulations {
        let name = s.metadata.name.clone().unwrap_or_default();
        for (p, spec) in s.spec.inputs.iter().chain(s.spec.outputs.iter()) {
            if let Some(units) = &spec.units {
                u.insert(format!("{name}/{p}"), units.clone());
            }
        }
    }
    u
}

fn status_of(e: &Ended) -> (&'static str, Value) {
    match e {
        Ended::Computed { seconds, .. } => ("computed", json!(seconds)),
        Ended::Cached { saved, .. } => ("cached", json!(saved)),
        Ended::Failed { .. } => ("failed", Value::Null),
    }
}

/// One row per run: inputs and outputs as columns (with units).
fn outcome_rows(outcomes: &[Outcome], units: &Units) -> Rows {
    let records: Vec<Map<String, Value>> = outcomes
        .iter()
        .map(|o| {
            let (status, seconds) = status_of(&o.ended);
            let mut r = Map::new();
            r.insert("run".into(), json!(o.run));
            r.insert("simulation".into(), json!(o.simulation));
            r.insert("status".into(), json!(status));
            for (k, v) in &o.inputs {
                r.insert(format!("input.{k}"), v.clone());
            }
            if let Some(out) = o.outputs.as_object() {
                for (k, v) in out {
                    r.insert(format!("output.{k}"), v.clone());
                }
            }
            r.insert("seconds".into(), seconds);
            if let Ended::Failed { message } = &o.ended {
                r.insert("error".into(), json!(message));
            }
            r
        })
        .collect();
    let sim = outcomes
        .first()
        .map(|o| o.simulation.clone())
        .unwrap_or_default();
    let mut columns = vec![Column::new("run", "run"), Column::new("status", "status")];
    columns.extend(param_columns(&records, &sim, units));
    columns.push(Column::with_units("seconds", "time", Some("s")));
    Rows { columns, records }
}

/// `input.*` then `output.*` columns for every key any record has.
fn param_columns(records: &[Map<String, Value>], sim: &str, units: &Units) -> Vec<Column> {
    let mut out = Vec::new();
    for class in ["input.", "output."] {
        let keys: BTreeSet<&String> = records
            .iter()
            .flat_map(|r| r.keys())
            .filter(|k| k.starts_with(class))
            .collect();
        for k in keys {
            let name = &k[class.len()..];
            out.push(Column::with_units(
                k,
                name,
                units.get(&format!("{sim}/{name}")).map(String::as_str),
            ));
        }
    }
    out
}

/// Each sweep's points as they ended, for `sweep show`.
fn save_sweeps(home: &Path, report: &Report) -> anyhow::Result<()> {
    if report.sweeps.is_empty() {
        return Ok(());
    }
    let dir = home.join("sweeps");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let units = units_of(report);
    for (name, runs) in &report.sweeps {
        let outcomes: Vec<Outcome> = runs
            .iter()
            .filter_map(|r| report.outcomes.iter().find(|o| &o.run == r).cloned())
            .collect();
        let rows = outcome_rows(&outcomes, &units);
        let version = report
            .simulations
            .iter()
            .find(|s| {
                outcomes
                    .first()
                    .is_some_and(|o| s.metadata.name.as_deref() == Some(o.simulation.as_str()))
            })
            .map(|s| s.spec.version.clone());
        let view = local::records::sweep_view(name, version, &outcomes);
        let doc = json!({
            "view": view,
            "sweep": name,
            "columns": rows.columns.iter().map(|c| json!({"key": c.key, "header": c.header})).collect::<Vec<_>>(),
            "points": rows.records,
        });
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn sweep_show(home: &Path, name: &str) -> Result<Rows, Failure> {
    let path = home.join("sweeps").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Failure::BadInput(format!(
            "no sweep {name:?} run on this machine (looked for {}); run it with simcache run -f FILE",
            path.display()
        ))
    })?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", path.display()))
        .map_err(Failure::Other)?;
    let columns = doc["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            Column::new(
                c["key"].as_str().unwrap_or_default(),
                c["header"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let records = doc["points"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_object().cloned())
        .collect();
    Ok(Rows { columns, records })
}

// --------------------------------------------------------- results, catalog

/// Results as rows, units from each version's definitions.
fn result_rows(results: &[Value], units: &Units) -> Rows {
    let records: Vec<Map<String, Value>> = results
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("execution_id".into(), r["execution_id"].clone());
            m.insert("simulation".into(), r["simulation_name"].clone());
            m.insert("version".into(), r["simulation_version"].clone());
            m.insert("status".into(), r["status"].clone());
            for (class, field) in [("input.", "input_params"), ("output.", "output_params")] {
                if let Some(o) = r[field].as_object() {
                    for (k, v) in o {
                        m.insert(format!("{class}{k}"), v.clone());
                    }
                }
            }
            m.insert("seconds".into(), r["duration_seconds"].clone());
            m
        })
        .collect();
    let sim = results
        .first()
        .and_then(|r| r["simulation_name"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut columns = vec![
        Column::new("execution_id", "execution"),
        Column::new("simulation", "simulation"),
        Column::new("version", "version"),
        Column::new("status", "status"),
    ];
    columns.extend(param_columns(&records, &sim, units));
    columns.push(Column::with_units("seconds", "duration", Some("s")));
    Rows { columns, records }
}

fn add_units(units: &mut Units, simulation: &str, defs: &[Value]) {
    for d in defs {
        if let (Some(n), Some(u)) = (d["name"].as_str(), d["units"].as_str()) {
            units.insert(format!("{simulation}/{n}"), u.to_string());
        }
    }
}

async fn local_results(
    home: &Path,
    simulation: Option<String>,
    limit: i64,
) -> Result<Rows, Failure> {
    let stores = local::open_store(home).await?;
    let found = local::search_results(&stores, simulation, limit).await?;
    let results: Vec<Value> = found.iter().map(local::result_json).collect();
    let mut units = Units::new();
    let versions: BTreeSet<(String, String)> = found
        .iter()
        .map(|r| (r.simulation_name.clone(), r.simulation_version.clone()))
        .collect();
    for (s, v) in versions {
        let defs = stores
            .results
            .definitions(&s, &v)
            .await
            .map_err(|e| Failure::Other(e.into()))?;
        let defs: Vec<Value> = defs
            .iter()
            .map(|d| json!({"name": d.name, "units": d.units}))
            .collect();
        add_units(&mut units, &s, &defs);
    }
    Ok(result_rows(&results, &units))
}

async fn remote_results(api: &Api, simulation: Option<&str>, limit: i64) -> Result<Rows, Failure> {
    let results = api.results(simulation, limit).await?;
    let mut units = Units::new();
    let versions: BTreeSet<(String, String)> = results
        .iter()
        .filter_map(|r| {
            Some((
                r["simulation_name"].as_str()?.to_string(),
                r["simulation_version"].as_str()?.to_string(),
            ))
        })
        .collect();
    for (s, v) in versions {
        // A version without introspected definitions has no units to show.
        if let Ok(defs) = api.definitions(&s, &v).await {
            add_units(&mut units, &s, &defs);
        }
    }
    Ok(result_rows(&results, &units))
}

fn catalog_columns() -> Vec<Column> {
    vec![
        Column::new("name", "name"),
        Column::new("version", "version"),
        Column::new("status", "status"),
        Column::new("runs", "runs"),
        Column::with_units("success_rate", "success", Some("%")),
        Column::with_units("cache_hit_rate", "cache hit", Some("%")),
        Column::new("description", "description"),
    ]
}

fn percent(v: &Value) -> Value {
    v.as_f64()
        .map(|r| json!((r * 1000.0).round() / 10.0))
        .unwrap_or(Value::Null)
}

async fn local_catalog(home: &Path) -> Result<Rows, Failure> {
    let stores = local::open_store(home).await?;
    let mut records = Vec::new();
    for (sim, stats) in stores.catalog.versions_with_stats().await? {
        let mut m = Map::new();
        m.insert("name".into(), json!(sim.spec.name));
        m.insert("version".into(), json!(sim.spec.version));
        m.insert("status".into(), json!(sim.status));
        m.insert("runs".into(), json!(stats.total_executions));
        m.insert("success_rate".into(), percent(&json!(stats.success_rate)));
        m.insert(
            "cache_hit_rate".into(),
            percent(&json!(stats.cache_hit_rate)),
        );
        m.insert("description".into(), json!(sim.spec.description));
        records.push(m);
    }
    Ok(Rows {
        columns: catalog_columns(),
        records,
    })
}

async fn remote_catalog(api: &Api) -> Result<Rows, Failure> {
    let mut records = Vec::new();
    for s in api.simulations().await? {
        let stats = match s["id"].as_i64() {
            Some(id) => api.stats(id).await?,
            None => Value::Null,
        };
        let mut m = Map::new();
        for k in ["name", "version", "status", "description"] {
            m.insert(k.into(), s[k].clone());
        }
        m.insert("runs".into(), stats["total_executions"].clone());
        m.insert("success_rate".into(), percent(&stats["success_rate"]));
        m.insert("cache_hit_rate".into(), percent(&stats["cache_hit_rate"]));
        records.push(m);
    }
    Ok(Rows {
        columns: catalog_columns(),
        records,
    })
}

/// Flushes stdout before the process ends (a pipe may be closed early).
pub fn flush() {
    let _ = std::io::stdout().flush();
}

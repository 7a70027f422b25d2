//! One program run as a recorded run, with the sidecar in-process: the run
//! API served on a free loopback port for the program, its inputs handed
//! over as a file and environment variables, its output lines logged, and
//! the run database completed from its exit and outputs. Used by
//! `simcache-sidecar exec` and local mode (the `simcache` command line).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use simcache_rundb::RunSummary;
use simcache_store::Backend;

use super::RunConfig;
use super::program::{ProgramSpec, run_program};
use super::settings::beside;
use crate::server::{self, ServerConfig};

/// The program to run and where.
#[derive(Debug, Clone)]
pub struct Program {
    pub command: Vec<String>,
    pub workdir: Option<PathBuf>,
    pub timeout: Option<Duration>,
}

/// How the recorded run ended.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub summary: RunSummary,
    /// The program's exit code, when it exited by itself.
    pub exit_code: Option<i32>,
    pub db_path: PathBuf,
}

/// Runs `program` as the run `rc` (whose token the program gets). `backend`
/// holds the sidecar's cache and sessions while it runs.
pub async fn record_program(
    backend: Backend,
    mut rc: RunConfig,
    program: &Program,
) -> anyhow::Result<Recorded> {
    let token = rc
        .token
        .clone()
        .context("a recorded run needs a run token")?;
    rc.inputs_file
        .get_or_insert_with(|| beside(&rc.db_path, "inputs.json"));
    rc.outputs_file
        .get_or_insert_with(|| beside(&rc.db_path, "outputs.json"));
    let db_path = rc.db_path.clone();
    let mut cfg = ServerConfig::new(backend);
    cfg.run = Some(rc);
    let srv = server::start(cfg, std::future::pending()).await?;
    let run = srv.run.clone().context("the run API did not start")?;
    let spec = ProgramSpec {
        command: program.command.clone(),
        workdir: program.workdir.clone(),
        env: vec![
            (simcache_core::pod_env::URL.into(), srv.url()),
            (simcache_core::pod_env::RUN_TOKEN.into(), token),
        ],
        timeout: program.timeout,
    };
    let outcome = run_program(run, &spec).await;
    srv.shutdown().await?;
    let (summary, exit_code) = outcome?;
    Ok(Recorded {
        summary,
        exit_code,
        db_path,
    })
}

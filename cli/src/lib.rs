//! `simcache`: run simulations and sweeps on this machine with their cache
//! (local mode), and read results and the catalog from the
//! local store or, with `--api`, from a cluster's operator API. The same
//! binary is the kubectl plugin `kubectl-simcache`.
//!
//! Exit codes: 0 ok; 1 a run failed; 2 bad input (a file, a field, a
//! flag); 3 anything else (the store or the API could not be reached).

pub mod commands;
pub mod local;
mod output;
mod remote;
mod ui;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use output::Format;

/// What went wrong, as an exit code.
#[derive(Debug)]
pub enum Failure {
    /// A run failed (exit 1); its line already said why.
    RunFailed,
    /// Bad input (exit 2): the message names the file, field or flag.
    BadInput(String),
    /// Anything else (exit 3).
    Other(anyhow::Error),
}

impl Failure {
    pub fn code(&self) -> u8 {
        match self {
            Failure::RunFailed => 1,
            Failure::BadInput(_) => 2,
            Failure::Other(_) => 3,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast_ref::<local::BadInput>() {
            Some(b) => Failure::BadInput(b.to_string()),
            None => Failure::Other(e),
        }
    }
}

impl From<simcache_store::StoreError> for Failure {
    fn from(e: simcache_store::StoreError) -> Self {
        Failure::Other(e.into())
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "simcache",
    version,
    about = "Run simulations and parameter sweeps with simcache's cache; read results and the catalog.",
    after_help = "Exit codes: 0 ok, 1 a run failed, 2 bad input (file, field or flag), 3 the store or API could not be reached."
)]
pub struct Cli {
    /// The operator API to read from (e.g. http://127.0.0.1:8080 after
    /// `kubectl port-forward svc/simcache 8080`); default: the local store.
    #[arg(long, env = "SIMCACHE_API", global = true)]
    pub api: Option<String>,
    /// The session for --api (`X-Session-ID`).
    #[arg(long, env = "SIMCACHE_SESSION", global = true, hide_env_values = true)]
    pub session: Option<String>,
    /// Where local mode keeps its store and run databases.
    #[arg(long, env = "SIMCACHE_LOCAL_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// Output: table (default), json, yaml or csv.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "table",
        global = true
    )]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SimulationRuns and SimulationSweeps in YAML files or folders
    /// on this machine; results already cached are not computed again.
    Run {
        /// A YAML file or a folder of them (repeatable).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Runs at once (default: the number of CPUs).
        #[arg(short = 'j', long = "jobs")]
        jobs: Option<usize>,
    },
    /// Recorded results, newest first.
    Results {
        /// Only this simulation's.
        #[arg(long)]
        simulation: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Simulation versions with their runs, success and cache-hit rates.
    Catalog,
    /// Sweeps run locally.
    #[command(subcommand)]
    Sweep(SweepCommand),
    /// Serve the web console over the local store (http://HOST:PORT/ui/).
    /// Log in as `admin`: its password is SIMCACHE_ADMIN_PASSWORD or, when
    /// unset on first use, a generated one written to <home>/admin-password.
    Ui {
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// Serve without logins: every visitor is an admin.
        #[arg(long)]
        no_auth: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, …).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum SweepCommand {
    /// A sweep's points: inputs, status, outputs.
    Show { name: String },
}

/// Runs the command line `args` (the program name first) and says how it
/// ended.
pub async fn main_with(args: Vec<String>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match commands::dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            match &f {
                Failure::RunFailed => {}
                Failure::BadInput(m) => eprintln!("error: {m}"),
                Failure::Other(e) => eprintln!("error: {e:#}"),
            }
            ExitCode::from(f.code())
        }
    }
}

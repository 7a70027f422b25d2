//! Command line and environment of `simcache-operator`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "simcache-operator",
    version,
    about = "simcache's operator: the catalog, results and files API"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "SIMCACHE_LOG_FORMAT", value_enum, default_value_t = simcache_web::logging::LogFormat::Text)]
    pub log_format: simcache_web::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Sqlite,
    #[value(alias = "postgres")]
    Postgresql,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the catalog/results/files API (prints the URL on stdout).
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where the catalog, results, files and sessions live.
    #[arg(long, env = "SIMCACHE_BACKEND", value_enum, default_value_t = BackendKind::Sqlite)]
    pub backend: BackendKind,
    /// SQLite file (default: ~/.simcache/catalog.db).
    #[arg(long, env = "SIMCACHE_DB_PATH")]
    pub db_path: Option<PathBuf>,
    /// PostgreSQL URL (required with --backend postgresql).
    #[arg(long, env = "SIMCACHE_DB_URL", hide_env_values = true)]
    pub db_url: Option<String>,
    #[arg(long, env = "SIMCACHE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
    #[arg(long, env = "SIMCACHE_API_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// 0 picks a free port.
    #[arg(long, env = "SIMCACHE_API_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Run databases are read only from under this directory.
    #[arg(long, env = "SIMCACHE_RUN_DB_BASE_PATH")]
    pub run_db_base_path: Option<PathBuf>,
    /// Disable authentication and privilege checks. Only as an explicit flag.
    #[arg(long)]
    pub no_auth: bool,
    /// Largest request body accepted (413 beyond it).
    #[arg(long, env = "SIMCACHE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Proxies whose X-Forwarded-For is believed (comma-separated IPs).
    #[arg(long, env = "SIMCACHE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
}

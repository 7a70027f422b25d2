//! Command line and environment. Every serve setting has a `SIMCACHE_*`
//! variable; sim2l's `SIM2L_CACHE_*` names are read as aliases.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "simcache-sidecar",
    version,
    about = "simcache's per-pod sidecar: the cache-aside HTTP API"
)]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Log format on stderr.
    #[arg(long, global = true, env = "SIMCACHE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Sqlite,
    #[value(alias = "postgres")]
    Postgresql,
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where cache entries and sessions live.
    #[arg(long, global = true, env = "SIMCACHE_CACHE_BACKEND", value_enum, default_value_t = BackendKind::Sqlite)]
    pub backend: BackendKind,
    /// SQLite file (default: ~/.simcache/cache.db).
    #[arg(long, global = true, env = "SIMCACHE_CACHE_DB_PATH")]
    pub db_path: Option<PathBuf>,
    /// PostgreSQL URL, e.g. postgresql://user:pass@host/simcache (required with --backend postgresql).
    #[arg(
        long,
        global = true,
        env = "SIMCACHE_CACHE_DB_URL",
        hide_env_values = true
    )]
    pub db_url: Option<String>,
    /// Largest number of PostgreSQL connections.
    #[arg(
        long,
        global = true,
        env = "SIMCACHE_DB_POOL_SIZE",
        default_value_t = 16
    )]
    pub db_pool_size: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the cache API (prints the URL it serves on stdout).
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage sessions.
    #[command(subcommand)]
    Session(SessionCommand),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[arg(long, env = "SIMCACHE_CACHE_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// 0 picks a free port.
    #[arg(long, env = "SIMCACHE_CACHE_PORT", default_value_t = 8001)]
    pub port: u16,
    /// Disable authentication and privilege checks. Only as an explicit flag.
    #[arg(long)]
    pub no_auth: bool,
    /// Largest request body accepted (413 beyond it).
    #[arg(long, env = "SIMCACHE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Size of the in-memory hot tier in bytes (LRU).
    #[arg(long, env = "SIMCACHE_MEMORY_TIER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub memory_tier_bytes: u64,
    /// How often batched hit counts are written to the store.
    #[arg(long, env = "SIMCACHE_HIT_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    pub hit_flush_interval_ms: u64,
    /// How often expired entries and sessions are deleted.
    #[arg(long, env = "SIMCACHE_SWEEP_INTERVAL_SECS", default_value_t = 60)]
    pub sweep_interval_secs: u64,
    /// How long a validated session is trusted before asking the store again.
    #[arg(long, env = "SIMCACHE_SESSION_CACHE_TTL_SECS", default_value_t = 5)]
    pub session_cache_ttl_secs: u64,
    /// Proxies whose X-Forwarded-For is believed (comma-separated IPs).
    #[arg(long, env = "SIMCACHE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from SIMCACHE_USER_PASSWORD or stdin.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "user", value_parser = ["user", "developer", "admin"])]
        role: String,
        #[arg(long)]
        email: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Create an anonymous session and print its id (the X-Session-ID value).
    Create {
        /// Role whose privileges the session gets.
        #[arg(long, default_value = "user", value_parser = ["user", "developer", "admin"])]
        role: String,
        /// Explicit privileges instead of a role (comma-separated; role names expand).
        #[arg(long, value_delimiter = ',')]
        privileges: Vec<String>,
        #[arg(long, default_value_t = 24.0)]
        ttl_hours: f64,
    },
}

/// sim2l's environment names, read when the SIMCACHE_* one and the flag are absent.
const ALIASES: &[(&str, &str)] = &[
    ("backend", "SIM2L_CACHE_BACKEND"),
    ("db_path", "SIM2L_CACHE_DB_PATH"),
    ("db_url", "SIM2L_CACHE_DB_URL"),
    ("port", "SIM2L_CACHE_PORT"),
    ("host", "SIM2L_CACHE_HOST"),
    ("trusted_proxies", "SIM2L_TRUSTED_PROXIES"),
];

impl Cli {
    pub fn parse_with_aliases() -> Cli {
        Self::parse_from_with_env(std::env::args_os(), |k| std::env::var(k).ok())
    }

    pub fn parse_from_with_env<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> Cli
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let matches = Cli::command().get_matches_from(args.clone());
        let mut extra: Vec<std::ffi::OsString> = Vec::new();
        let sub = matches.subcommand().map(|(_, m)| m);
        for (id, var) in ALIASES {
            // Ok(source) when the argument exists in those matches.
            let source = |m: &ArgMatches| m.try_get_raw(id).ok().map(|_| m.value_source(id));
            let source = sub.and_then(source).or_else(|| source(&matches));
            let unset = matches!(source, Some(None) | Some(Some(ValueSource::DefaultValue)));
            if let (true, Some(v)) = (unset, env(var)) {
                extra.push(format!("--{}={v}", id.replace('_', "-")).into());
            }
        }
        if extra.is_empty() {
            return Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        }
        // Re-parse with the alias values appended as flags (global flags are
        // accepted after the subcommand).
        let mut all = args;
        all.extend(extra);
        Cli::parse_from(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim2l_aliases_fill_unset_settings_only() {
        let env = |k: &str| match k {
            "SIM2L_CACHE_BACKEND" => Some("postgresql".to_string()),
            "SIM2L_CACHE_PORT" => Some("9100".to_string()),
            _ => None,
        };
        let cli = Cli::parse_from_with_env(["simcache-sidecar", "serve"], env);
        assert_eq!(cli.store.backend, BackendKind::Postgresql);
        let Command::Serve(s) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(s.port, 9100);
        let cli = Cli::parse_from_with_env(["simcache-sidecar", "serve", "--port", "7000"], env);
        let Command::Serve(s) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(s.port, 7000, "an explicit flag beats the alias");
        assert!(!s.no_auth, "auth is on unless --no-auth is given");
    }
}

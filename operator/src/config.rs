//! Command line and environment of `simcache-operator`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "simcache-operator",
    version,
    about = "simcache's operator: the Kubernetes controllers, the catalog/results/files API and the web console"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "SIMCACHE_LOG_FORMAT", value_enum, default_value_t = simcache_web::logging::LogFormat::Text)]
    pub log_format: simcache_web::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

simcache_web::store_args! {
    /// Where the catalog, results, files and sessions live.
    pub struct StoreArgs {
        backend_env: "SIMCACHE_BACKEND",
        path_env: "SIMCACHE_DB_PATH",
        url_env: "SIMCACHE_DB_URL",
        default_file: "catalog.db",
        global: false,
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the catalog/results/files/ingest API and, unless
    /// --no-controllers, run the Kubernetes controllers (prints the URL on stdout).
    Serve(Box<ServeArgs>),
    /// Make the trial database's Secret (password and URL) unless it
    /// exists; never changes one that does (the chart runs this as the
    /// operator pod's init container when postgresql.enabled).
    TrialDbSecret(crate::trial_db::TrialDb),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub limits: simcache_web::server::LimitArgs,
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
    /// Mark the web console's session cookie `Secure` (TLS ends in front of
    /// the operator; also set per request by `X-Forwarded-Proto: https`).
    #[arg(long, env = "SIMCACHE_CONSOLE_SECURE_COOKIES")]
    pub console_secure_cookies: bool,
    /// Largest request body accepted (413 beyond it).
    #[arg(long, env = "SIMCACHE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Proxies whose X-Forwarded-For is believed (comma-separated IPs).
    #[arg(long, env = "SIMCACHE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,
    /// Largest run database a sidecar may upload.
    #[arg(long, env = "SIMCACHE_MAX_INGEST_BYTES", default_value_t = 1 << 30)]
    pub max_ingest_bytes: usize,
    #[command(flatten)]
    pub controllers: ControllerArgs,
}

/// The Kubernetes controllers (the cluster comes from the in-cluster
/// service account or KUBECONFIG).
#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Serve the API only; run no controllers (no cluster needed).
    #[arg(long, env = "SIMCACHE_NO_CONTROLLERS")]
    pub no_controllers: bool,
    /// The sidecar image injected into simulation pods.
    #[arg(long, env = "SIMCACHE_SIDECAR_IMAGE", default_value = concat!("ghcr.io/simcache/sidecar:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,
    #[arg(long, env = "SIMCACHE_SIDECAR_IMAGE_PULL_POLICY")]
    pub sidecar_image_pull_policy: Option<String>,
    /// The shared tier's URL as pods reach it (`simcache-sidecar shared`,
    /// the chart's `sharedTier` Service): pods' sidecars keep the cache
    /// there with their run's session, and hold no database credential.
    /// Default: each pod keeps a cache of its own.
    #[arg(long, env = "SIMCACHE_SHARED_TIER_URL", value_parser = parse_http_url)]
    pub shared_tier_url: Option<String>,
    /// This API's URL as simulation pods reach it (sidecars upload run
    /// databases to it). Default: the address it binds.
    #[arg(long, env = "SIMCACHE_OPERATOR_URL")]
    pub operator_url: Option<String>,
    /// Watch only these namespaces (repeat the flag, or separate with
    /// commas; default: all). Each needs the operator's Role there.
    #[arg(long, env = "SIMCACHE_WATCH_NAMESPACE", value_delimiter = ',')]
    pub watch_namespace: Vec<String>,
    /// The sidecar container's resources in every simulation pod, as the
    /// JSON of a Kubernetes ResourceRequirements; a Simulation's
    /// `spec.sidecarResources` takes its place for that Simulation.
    #[arg(
        long,
        env = "SIMCACHE_SIDECAR_RESOURCES",
        default_value = r#"{"requests":{"cpu":"20m","memory":"32Mi"},"limits":{"memory":"256Mi"}}"#,
        value_parser = parse_resources
    )]
    pub sidecar_resources: k8s_openapi::api::core::v1::ResourceRequirements,
    /// Node labels simulation pods must match, as key=value (repeatable or
    /// comma-separated).
    #[arg(long, env = "SIMCACHE_POD_NODE_SELECTOR", value_delimiter = ',', value_parser = parse_label)]
    pub pod_node_selector: Vec<(String, String)>,
    /// The Pod Security Standards level every run pod must meet
    /// (privileged, baseline or restricted); a pod that does not is refused
    /// before it is created, naming the field.
    #[arg(
        long,
        env = "SIMCACHE_POD_SECURITY_LEVEL",
        default_value = "restricted"
    )]
    pub pod_security_level: simcache_core::pod::security::Level,
    /// ServiceAccounts a Simulation's podTemplate may set besides the
    /// namespace's `default` (repeatable or comma-separated).
    #[arg(long, env = "SIMCACHE_ALLOWED_SERVICE_ACCOUNTS", value_delimiter = ',')]
    pub allowed_service_account: Vec<String>,
    /// Run the controllers without leader election (one replica only!).
    #[arg(long, env = "SIMCACHE_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,
    /// Namespace of the leader Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub leader_namespace: String,
    #[arg(
        long,
        env = "SIMCACHE_LEADER_LEASE_NAME",
        default_value = "simcache-operator"
    )]
    pub leader_lease_name: String,
    /// Seconds a leader lease lasts without renewal.
    #[arg(long, env = "SIMCACHE_LEADER_LEASE_SECONDS", default_value_t = 15)]
    pub leader_lease_seconds: u64,
    /// This replica's name in leases and events (in a pod: its name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a cache-key lease lives without a heartbeat.
    #[arg(long, env = "SIMCACHE_CACHE_LEASE_SECONDS", default_value_t = 60)]
    pub cache_lease_seconds: u64,
    /// Seconds between CachePolicy sweeps.
    #[arg(long, env = "SIMCACHE_SWEEP_SECONDS", default_value_t = 60)]
    pub sweep_seconds: u64,
    /// Seconds a finished run keeps its pod and token Secret (0: delete at
    /// once), unless the run or its Simulation sets ttlSecondsAfterFinished.
    /// The run's status, results and run database stay.
    #[arg(
        long,
        env = "SIMCACHE_RUN_TTL_SECONDS_AFTER_FINISHED",
        default_value_t = 3600
    )]
    pub run_ttl_seconds_after_finished: u64,
    /// Parallel reconciliations per controller.
    #[arg(
        long = "reconcile-concurrency",
        env = "SIMCACHE_RECONCILE_CONCURRENCY",
        default_value_t = 32
    )]
    pub concurrency: u16,
}

fn parse_resources(s: &str) -> Result<k8s_openapi::api::core::v1::ResourceRequirements, String> {
    let r: k8s_openapi::api::core::v1::ResourceRequirements =
        serde_json::from_str(s).map_err(|e| {
            format!(
                "not the JSON of a ResourceRequirements ({{\"requests\":{{\"cpu\":\"20m\"}}}}): {e}"
            )
        })?;
    simcache_core::pod::check_resources(&r).map_err(|e| e.to_string())?;
    Ok(r)
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// An `http://` or `https://` URL with a host (the shared tier's).
fn parse_http_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("{s:?}: expected an http:// or https:// URL"))?;
    if rest.split('/').next().unwrap_or("").is_empty() {
        return Err(format!("{s:?}: the URL names no host"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use simcache_auth::{AuthConfig, PrivilegeSet, Role};
use simcache_sidecar::config::{
    BackendKind, Cli, Command, ExecArgs, ServeArgs, SessionCommand, StoreArgs, UserCommand,
};
use simcache_sidecar::run::ingest::{IngestTarget, finish_and_upload};
use simcache_sidecar::run::recorded::{Program, record_program};
use simcache_sidecar::run::settings::new_execution_id;
use simcache_sidecar::server::{self, ServerConfig};
use simcache_store::Backend;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_with_aliases();
    simcache_web::logging::init(cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let backend = cli.store.backend()?;
    match cli.command {
        Command::Serve(a) => serve(backend, &cli.store, a).await,
        Command::Exec(e) => exec(backend, e).await,
        Command::SfmProxy(a) => simcache_sidecar::sfm_proxy::run(backend, a).await,
        Command::Shared(a) => simcache_sidecar::shared::run(backend, a).await,
        Command::User(UserCommand::Create {
            username,
            role,
            email,
        }) => {
            let (_, _, auth) = services(backend).await?;
            let password = match std::env::var("SIMCACHE_USER_PASSWORD") {
                Ok(p) if !p.is_empty() => p,
                _ => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading the password from stdin")?;
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let role = Role::parse(&role).context("unknown role")?;
            let id = auth
                .create_user(&username, &password, role, email.as_deref())
                .await?;
            eprintln!("created user {username:?} (id {id}, role {})", role.name());
            Ok(())
        }
        Command::Session(SessionCommand::Create {
            role,
            privileges,
            ttl_hours,
            sfm_devices,
        }) => {
            let (_, _, auth) = services(backend).await?;
            let set = if privileges.is_empty() {
                Role::parse(&role).context("unknown role")?.privileges()
            } else {
                PrivilegeSet::parse(&privileges)?
            };
            let issued = if sfm_devices.is_empty() {
                auth.create_anonymous(set, Some(ttl_hours)).await?
            } else {
                for d in &sfm_devices {
                    let ok = d.split_once('/').is_some_and(|(ns, name)| {
                        simcache_crds::fields::is_namespace(ns)
                            && simcache_crds::fields::is_object_name(name)
                    });
                    if !ok {
                        bail!("--sfm-device {d:?}: expected namespace/name");
                    }
                }
                let scope = simcache_auth::Scope {
                    sfm_devices,
                    sfm_control: Vec::new(),
                };
                auth.create_anonymous_scoped(set, Some(ttl_hours), &scope)
                    .await?
            };
            eprintln!("session privileges: {}", set.names().join(", "));
            println!("{}", issued.token);
            Ok(())
        }
    }
}

/// The serve configuration from its flags: everything that must parse is
/// checked here, before anything listens.
fn serve_config(backend: Backend, a: &ServeArgs) -> anyhow::Result<ServerConfig> {
    let mut cfg = ServerConfig::new(backend);
    let settings = a.pod_settings()?;
    cfg.addr = SocketAddr::new(a.host, a.port);
    cfg.probe_addr = a.probe_listen;
    cfg.pod_session = a.pod_session.clone().map(|token| server::PodSession {
        token,
        who: format!(
            "run:{}",
            a.run.execution_id.as_deref().unwrap_or("this pod")
        ),
    });
    cfg.shared_tier = a.shared_tier_url.clone();
    cfg.max_body_bytes = a.max_body_bytes;
    cfg.limits = a.limits.limits();
    cfg.memory_tier_bytes = a.memory_tier_bytes;
    cfg.hit_flush_interval = Duration::from_millis(a.hit_flush_interval_ms.max(10));
    cfg.sweep_interval = Duration::from_secs(a.sweep_interval_secs.max(1));
    cfg.auth = AuthConfig {
        no_auth: a.no_auth,
        session_cache_ttl: Duration::from_secs(a.session_cache_ttl_secs),
        trusted_proxies: a.trusted_proxies.clone(),
        ..AuthConfig::default()
    };
    cfg.sfm = match a.sfm_listen {
        Some(addr) => Some((
            addr,
            a.sfm
                .config(settings.as_ref().map(|s| &s.sfm_devices[..]))?,
        )),
        None => None,
    };
    cfg.sor = a
        .sor
        .config(settings.as_ref().map(|s| &s.systems_of_record[..]))?;
    cfg.admin_password = std::env::var("SIMCACHE_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let executor = if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        "kubernetes"
    } else {
        "sidecar"
    };
    cfg.run = a
        .run
        .to_run_config(None, executor, a.run.run_token.clone(), &[])?;
    Ok(cfg)
}

/// Serves until stopped; in a pod, then completes the run and uploads it.
async fn serve(backend: Backend, store: &StoreArgs, a: ServeArgs) -> anyhow::Result<()> {
    let cfg = serve_config(backend, &a)?;
    let ingest = match (&a.ingest_url, &a.ingest_token) {
        (Some(url), Some(token)) => Some(IngestTarget {
            url: url.clone(),
            token: token.clone(),
            timeout: Duration::from_secs(a.ingest_timeout_secs),
        }),
        (Some(_), None) => {
            bail!("--ingest-url needs --ingest-token (SIMCACHE_INGEST_TOKEN)")
        }
        _ => None,
    };
    if ingest.is_some() && cfg.run.is_none() {
        bail!("--ingest-url needs a run to record (--execution-id and the simulation)");
    }
    let srv = server::start(cfg, simcache_web::shutdown::signal()).await?;
    // The first stdout line is the URL: scripts and tests read it.
    println!("simcache-sidecar serving cache API on {}", srv.url());
    if let Some(sfm) = srv.sfm_addr {
        eprintln!("SFM proxy (pod-local, no auth) on http://{sfm}");
    }
    if a.pod_session.is_some() {
        // A run pod: the simulation already holds the session to send.
        eprintln!(
            "auth is on: the pod's session ({}) is accepted",
            simcache_core::pod_env::SESSION_ID
        );
    } else if !a.no_auth {
        eprintln!(
            "auth is on: send X-Session-ID. Create one with:\n  simcache-sidecar session create --role developer{}",
            db_hint(store)
        );
    }
    let run = srv.run.clone();
    srv.wait().await?;
    // Stopped: in a pod that means the simulation container ended.
    if let (Some(target), Some(run)) = (ingest, run) {
        finish_and_upload(run, &target).await?;
    }
    Ok(())
}

fn db_hint(s: &StoreArgs) -> String {
    match (&s.backend, &s.db_path) {
        (BackendKind::Sqlite, Some(p)) => format!(" --db-path {}", p.display()),
        (BackendKind::Postgresql, _) => " --backend postgresql --db-url ...".into(),
        _ => String::new(),
    }
}

async fn services(
    backend: Backend,
) -> anyhow::Result<(
    simcache_store::Stores,
    std::sync::Arc<simcache_sidecar::cache::CacheService>,
    std::sync::Arc<simcache_auth::Authenticator>,
)> {
    let cfg = ServerConfig::new(backend);
    server::open_services(&cfg, &prometheus::Registry::new()).await
}

/// `simcache-sidecar exec -- program args`: one recorded run of a local program.
async fn exec(backend: Backend, e: ExecArgs) -> anyhow::Result<()> {
    let token = match e.run.run_token.clone() {
        Some(t) => t,
        None => simcache_store::random::token()?,
    };
    let id = match e.run.execution_id.clone() {
        Some(i) => i,
        None => new_execution_id()?,
    };
    let rc = e
        .run
        .to_run_config(Some(id), "local", Some(token), &e.command)?
        .context("exec always records a run")?;
    eprintln!(
        "run {} recording to {}",
        rc.execution_id,
        rc.db_path.display()
    );
    let program = Program {
        command: e.command.clone(),
        workdir: e.workdir.clone(),
        timeout: e.timeout_secs.map(Duration::from_secs),
    };
    let done = record_program(backend, rc, &program).await?;
    let summary = done.summary;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    if summary.status != "completed" {
        if let Some(why) = &summary.error_message {
            eprintln!("run failed: {why}");
        }
        std::process::exit(done.exit_code.filter(|c| *c != 0).unwrap_or(1));
    }
    Ok(())
}

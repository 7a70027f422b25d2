use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Parser;
use simcache_auth::AuthConfig;
use simcache_operator::config::{BackendKind, Cli, Command, ServeArgs};
use simcache_operator::server::{self, ApiConfig};
use simcache_store::Backend;
use simcache_store::postgres::PgOptions;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    simcache_web::logging::init(cli.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn backend(a: &ServeArgs) -> anyhow::Result<Backend> {
    Ok(match a.backend {
        BackendKind::Sqlite => Backend::Sqlite {
            path: a
                .db_path
                .clone()
                .unwrap_or_else(|| home().join(".simcache").join("catalog.db")),
        },
        BackendKind::Postgresql => {
            let Some(url) = &a.db_url else {
                bail!("--backend postgresql needs --db-url (or SIMCACHE_DB_URL)");
            };
            let mut o = PgOptions::new(url.clone());
            o.pool_size = a.db_pool_size;
            Backend::Postgres(o)
        }
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => {
            let runs = a
                .run_db_base_path
                .clone()
                .unwrap_or_else(simcache_rundb::default_base_path);
            let mut cfg = ApiConfig::new(backend(&a)?, runs);
            cfg.addr = SocketAddr::new(a.host, a.port);
            cfg.max_body_bytes = a.max_body_bytes;
            cfg.auth = AuthConfig {
                no_auth: a.no_auth,
                session_cache_ttl: Duration::from_secs(5),
                trusted_proxies: a.trusted_proxies,
                ..AuthConfig::default()
            };
            cfg.admin_password = std::env::var("SIMCACHE_ADMIN_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty());
            let api = server::start(cfg, simcache_web::shutdown::signal()).await?;
            println!("simcache-operator serving the API on {}", api.url());
            api.wait().await
        }
    }
}

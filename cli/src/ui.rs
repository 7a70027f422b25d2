//! `simcache ui`: the API and web console over the local store,
//! with sweeps from the records `simcache run` writes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use simcache_api::server::{self, ApiConfig};
use simcache_auth::{AuthConfig, Authenticator};

use crate::local::records::LocalRecords;
use simcache_store::Backend;

/// Where a generated admin password is written (0600), never printed.
pub fn password_file(home: &Path) -> std::path::PathBuf {
    home.join("admin-password")
}

/// Makes sure an `admin` can log in: from SIMCACHE_ADMIN_PASSWORD, or a
/// generated password written to a file only its owner can read.
async fn ensure_admin(home: &Path) -> anyhow::Result<()> {
    let stores = crate::local::open_store(home).await?;
    let auth = Authenticator::new(stores.sessions.clone(), AuthConfig::default());
    if let Some(pw) = std::env::var("SIMCACHE_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
    {
        if auth.bootstrap_admin(&pw).await? {
            eprintln!("created user admin with the password in SIMCACHE_ADMIN_PASSWORD");
        }
        return Ok(());
    }
    let pw = simcache_store::random::token()?;
    if auth.bootstrap_admin(&pw).await? {
        let path = password_file(home);
        write_private(&path, &pw)?;
        eprintln!(
            "created user admin; its password is in {} (readable by you only)",
            path.display()
        );
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn serve(home: &Path, addr: SocketAddr, no_auth: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    if !no_auth {
        ensure_admin(home).await?;
    }
    let mut cfg = ApiConfig::new(
        Backend::Sqlite {
            path: home.join("simcache.db"),
        },
        home.join("runs"),
    );
    cfg.addr = addr;
    cfg.auth.no_auth = no_auth;
    let sources = simcache_console::SourceSlot::default();
    let _ = sources.set(Arc::new(LocalRecords::new(home.join("sweeps"))));
    let console = simcache_console::mount(sources, false);
    let api = server::start(cfg, vec![console], simcache_web::shutdown::signal()).await?;
    println!("simcache console on {}/ui/", api.url());
    api.wait().await
}

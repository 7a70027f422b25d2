//! The store flags both binaries take (`--backend`, `--db-path`, `--db-url`,
//! `--db-pool-size`), defined once. Each binary names its own environment
//! variables (the operator's catalog and the sidecar's cache are different
//! databases that may be configured side by side), so the flags are one
//! macro, [`store_args!`](crate::store_args), and one conversion to a
//! [`Backend`].

use std::path::PathBuf;

use simcache_store::Backend;
use simcache_store::postgres::PgOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    Sqlite,
    #[value(alias = "postgres")]
    Postgresql,
}

/// `--backend postgresql` without a URL.
#[derive(Debug, thiserror::Error)]
#[error("--backend postgresql needs --db-url (or {url_env})")]
pub struct MissingUrl {
    pub url_env: &'static str,
}

/// The backend the flags name: SQLite at `db_path` (else `~/.simcache/<default_file>`),
/// or PostgreSQL at `db_url` with a pool of `pool_size`.
pub fn backend(
    kind: BackendKind,
    db_path: Option<PathBuf>,
    db_url: Option<String>,
    pool_size: usize,
    default_file: &str,
    url_env: &'static str,
) -> Result<Backend, MissingUrl> {
    Ok(match kind {
        BackendKind::Sqlite => Backend::Sqlite {
            path: db_path.unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(".simcache")
                    .join(default_file)
            }),
        },
        BackendKind::Postgresql => {
            let url = db_url.ok_or(MissingUrl { url_env })?;
            let mut o = PgOptions::new(url);
            o.pool_size = pool_size;
            Backend::Postgres(o)
        }
    })
}

/// Defines a clap `Args` struct `$name` with the four store flags under the
/// given environment variables, and its `backend()`.
#[macro_export]
macro_rules! store_args {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            backend_env: $backend_env:expr,
            path_env: $path_env:expr,
            url_env: $url_env:expr,
            default_file: $default_file:literal,
            global: $global:literal $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, clap::Args)]
        pub struct $name {
            /// Where the data lives.
            #[arg(long, global = $global, env = $backend_env, value_enum,
                  default_value_t = $crate::store_flags::BackendKind::Sqlite)]
            pub backend: $crate::store_flags::BackendKind,
            #[doc = concat!("SQLite file (default: ~/.simcache/", $default_file, ").")]
            #[arg(long, global = $global, env = $path_env)]
            pub db_path: Option<std::path::PathBuf>,
            /// PostgreSQL URL, e.g. postgresql://user:pass@host/simcache (required with --backend postgresql).
            #[arg(long, global = $global, env = $url_env, hide_env_values = true)]
            pub db_url: Option<String>,
            /// Largest number of PostgreSQL connections.
            #[arg(long, global = $global, env = "SIMCACHE_DB_POOL_SIZE", default_value_t = 16)]
            pub db_pool_size: usize,
        }

        impl $name {
            /// The store these flags name.
            pub fn backend(
                &self,
            ) -> Result<simcache_store::Backend, $crate::store_flags::MissingUrl> {
                $crate::store_flags::backend(
                    self.backend,
                    self.db_path.clone(),
                    self.db_url.clone(),
                    self.db_pool_size,
                    $default_file,
                    $url_env,
                )
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_a_backend_or_say_what_is_missing() {
        let b = backend(BackendKind::Sqlite, None, None, 4, "x.db", "ENV").unwrap();
        assert!(matches!(b, Backend::Sqlite { path } if path.ends_with(".simcache/x.db")));
        let e = backend(
            BackendKind::Postgresql,
            None,
            None,
            4,
            "x.db",
            "SIMCACHE_X_URL",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--backend postgresql needs --db-url (or SIMCACHE_X_URL)"
        );
        let p = backend(
            BackendKind::Postgresql,
            None,
            Some("postgresql://h/db".into()),
            4,
            "x.db",
            "E",
        )
        .unwrap();
        assert!(matches!(p, Backend::Postgres(o) if o.pool_size == 4));
    }
}

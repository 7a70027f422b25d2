//! Shared set-up: an in-process sidecar on an ephemeral port over a real SQLite
//! file or a real PostgreSQL database, a real HTTP client, and sessions for
//! each role.
#![allow(dead_code)]

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use simcache_sidecar::server::{self, RunningServer, ServerConfig};
use simcache_store::Backend;
use simcache_store::postgres::PgOptions;

pub struct Ctx {
    pub srv: RunningServer,
    pub client: simcache_testkit::http::SessionClient,
    pub backend: Backend,
    pub user: String,
    pub dev: String,
    pub admin: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite_backend() -> (Backend, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        Backend::Sqlite {
            path: dir.path().join("cache.db"),
        },
        dir,
    )
}

pub async fn pg_backend(hint: &str) -> Backend {
    Backend::Postgres(PgOptions::new(simcache_testkit::fresh_database(hint).await))
}

pub async fn sqlite() -> Ctx {
    sqlite_with(|_| {}).await
}

pub async fn sqlite_with(tweak: impl FnOnce(&mut ServerConfig)) -> Ctx {
    let (b, dir) = sqlite_backend().await;
    start(b, Some(dir), tweak).await
}

pub async fn postgres(hint: &str) -> Ctx {
    postgres_with(hint, |_| {}).await
}

pub async fn postgres_with(hint: &str, tweak: impl FnOnce(&mut ServerConfig)) -> Ctx {
    start(pg_backend(hint).await, None, tweak).await
}

pub async fn start(
    backend: Backend,
    dir: Option<tempfile::TempDir>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> Ctx {
    let mut cfg = ServerConfig::new(backend.clone());
    cfg.hit_flush_interval = Duration::from_millis(100);
    cfg.sweep_interval = Duration::from_secs(3600);
    tweak(&mut cfg);
    let srv = server::start(cfg, std::future::pending())
        .await
        .expect("server starts");
    let (user, dev, admin) = simcache_testkit::roles::role_sessions(&srv.auth).await;
    let ctx = Ctx {
        client: simcache_testkit::http::SessionClient::new(srv.url()),
        srv,
        backend,
        user,
        dev,
        admin,
        _dir: dir,
    };
    ctx.wait_coherent().await;
    ctx
}

impl Ctx {
    /// Stops this server and starts another on the same database.
    pub async fn restart(self, tweak: impl FnOnce(&mut ServerConfig)) -> Ctx {
        let Ctx {
            srv, backend, _dir, ..
        } = self;
        srv.shutdown().await.expect("clean shutdown");
        start(backend, _dir, tweak).await
    }

    /// On PostgreSQL the memory tier starts once the event channel is up.
    pub async fn wait_coherent(&self) {
        let hot = self.srv.cache.hot();
        simcache_testkit::wait::eventually(
            "the memory tier becoming coherent",
            simcache_testkit::wait::PATIENCE,
            || {
                let on = hot.enabled().then_some(());
                async move { on }
            },
        )
        .await;
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        ct: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.url))
                .header("content-type", ct)
                .body(body),
            token,
        )
        .await
    }

    pub async fn send_put(&self, path: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .put(format!("{}{path}", self.url))
                .json(&json!({})),
            None,
        )
        .await
    }

    pub async fn put_entry(&self, key: &str, sim: i64, extra: Value) -> Value {
        let (s, b) = self
            .post("/cache", Some(&self.dev), entry_body(key, sim, extra))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

pub fn entry_body(key: &str, sim: i64, extra: Value) -> Value {
    let mut b = json!({
        "cache_key": key,
        "simulation_id": sim,
        "simulation_name": "thermal_sim",
        "simulation_version": "1.0.0",
        "execution_id": "exec-001",
        "squid_id": "thermal_sim/1.0.0/xyz",
        "input_hash": "hash123",
        "run_db_path": "/path/to/run.db",
        "ttl_hours": 24,
        "metadata": {"node": "n1"}
    });
    for (k, v) in extra.as_object().expect("object").iter() {
        b[k] = v.clone();
    }
    b
}

/// `c.get(..)`, `c.post(..)`, `c.url`, `c.http` come from the shared client.
impl std::ops::Deref for Ctx {
    type Target = simcache_testkit::http::SessionClient;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

/// The sidecar binary, for tests that run it as a process.
pub const BIN: &str = env!("CARGO_BIN_EXE_simcache-sidecar");

/// Runs the sidecar binary with `args` and `envs`, checks that it succeeded,
/// and returns its stdout, trimmed (a session token, say).
pub async fn sidecar_cli(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Polls `f` until it returns true (within the test kit's patience: a
/// loaded machine delays NOTIFY and reconnects); returns how long it took.
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < simcache_testkit::wait::PATIENCE {
        if f().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{what} did not happen within {:?}",
        simcache_testkit::wait::PATIENCE
    );
}

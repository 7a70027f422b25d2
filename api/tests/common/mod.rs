//! The API on an ephemeral port over a real SQLite file or a real
//! PostgreSQL database, a real HTTP client, sessions for each role, and run
//! databases written with the real library.
#![allow(dead_code)]

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};
use simcache_api::Extension;
use simcache_api::server::{self, ApiConfig, RunningApi};
use simcache_rundb::{ArtifactCategory, ParamSpec, RunDb, RunInit, RunStatus};
use simcache_store::Backend;
use simcache_store::postgres::PgOptions;

pub struct Ctx {
    pub api: RunningApi,
    /// The database the API serves, for a second process's view of it.
    pub backend: Backend,
    pub client: simcache_testkit::http::SessionClient,
    pub runs: tempfile::TempDir,
    pub user: String,
    pub dev: String,
    pub admin: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> Ctx {
    sqlite_with(Vec::new()).await
}

/// The API on a fresh SQLite file with `extensions` mounted.
pub async fn sqlite_with(extensions: Vec<Extension>) -> Ctx {
    let (b, dir) = sqlite_backend();
    serve(b, Some(dir), |_| {}, extensions).await
}

/// A backend on a fresh SQLite file in a folder of its own.
pub fn sqlite_backend() -> (Backend, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let b = Backend::Sqlite {
        path: dir.path().join("catalog.db"),
    };
    (b, dir)
}

pub async fn postgres(hint: &str) -> Ctx {
    postgres_with(hint, Vec::new()).await
}

/// The API on a fresh PostgreSQL database with `extensions` mounted.
pub async fn postgres_with(hint: &str, extensions: Vec<Extension>) -> Ctx {
    let url = simcache_testkit::fresh_database(hint).await;
    serve(
        Backend::Postgres(PgOptions::new(url)),
        None,
        |_| {},
        extensions,
    )
    .await
}

pub async fn start(backend: Backend, dir: Option<tempfile::TempDir>) -> Ctx {
    start_with(backend, dir, |_| {}).await
}

/// Like [`start`], with the configuration adjusted first.
pub async fn start_with(
    backend: Backend,
    dir: Option<tempfile::TempDir>,
    adjust: impl FnOnce(&mut ApiConfig),
) -> Ctx {
    serve(backend, dir, adjust, Vec::new()).await
}

/// The API with the configuration adjusted and `extensions` mounted.
pub async fn serve(
    backend: Backend,
    dir: Option<tempfile::TempDir>,
    adjust: impl FnOnce(&mut ApiConfig),
    extensions: Vec<Extension>,
) -> Ctx {
    let runs = tempfile::tempdir().unwrap();
    let mut cfg = ApiConfig::new(backend.clone(), runs.path().to_path_buf());
    adjust(&mut cfg);
    let api = server::start(cfg, extensions, std::future::pending())
        .await
        .expect("API starts");
    let (user, dev, admin) = simcache_testkit::roles::role_sessions(&api.auth).await;
    Ctx {
        client: simcache_testkit::http::SessionClient::new(api.url()),
        api,
        backend,
        runs,
        user,
        dev,
        admin,
        _dir: dir,
    }
}

impl Ctx {
    /// Registers a simulation version as a developer; returns its id.
    pub async fn register(&self, name: &str, version: &str, extra: Value) -> i64 {
        let mut body = json!({
            "name": name, "version": version,
            "input_schema": {"temperature": {"type": "number", "units": "K"}},
            "output_schema": {"max_stress": {"type": "number", "units": "Pa"}},
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let (s, b) = self.post("/simulations", Some(&self.dev), body).await;
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s}: {b}");
        b["id"].as_i64().unwrap()
    }

    /// Writes a completed run database under the runs directory.
    pub fn write_run(
        &self,
        id: &str,
        sim: &str,
        version: &str,
        inputs: Value,
        outputs: Value,
    ) -> std::path::PathBuf {
        write_run(self.runs.path(), id, sim, version, inputs, outputs)
    }
}

pub fn write_run(
    dir: &Path,
    id: &str,
    sim: &str,
    version: &str,
    inputs: Value,
    outputs: Value,
) -> std::path::PathBuf {
    let mut db = RunDb::open_in(dir, id).unwrap();
    db.initialize_run(&RunInit::new(sim, version)).unwrap();
    let spec_for = |v: &Value| {
        let t = simcache_rundb::ValueType::infer(v).unwrap_or(simcache_rundb::ValueType::String);
        let mut s = ParamSpec::of_type(if t == simcache_rundb::ValueType::Integer {
            simcache_rundb::ValueType::Number
        } else {
            t
        });
        if t == simcache_rundb::ValueType::Integer || t == simcache_rundb::ValueType::Number {
            s.units = Some("K".into());
            s.min = Some(0.0);
        }
        s
    };
    let typed = |values: &Value| -> Vec<(String, Value, ParamSpec)> {
        values
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), spec_for(v)))
            .collect()
    };
    let (ins, outs) = (typed(&inputs), typed(&outputs));
    db.save_inputs(&rows(&ins)).unwrap();
    db.save_outputs(&rows(&outs)).unwrap();
    db.add_artifact_bytes(
        "result.csv",
        format!("run,{id}\n").as_bytes(),
        Some("text/csv"),
        ArtifactCategory::Data,
    )
    .unwrap();
    db.complete_run(RunStatus::Completed, Some(1.5), None, None)
        .unwrap();
    db.path().to_path_buf()
}

/// `c.get(..)`, `c.post(..)`, `c.url`, `c.http` come from the shared client.
impl std::ops::Deref for Ctx {
    type Target = simcache_testkit::http::SessionClient;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

fn rows(t: &[(String, Value, ParamSpec)]) -> Vec<(&str, &Value, &ParamSpec)> {
    t.iter().map(|(k, v, s)| (k.as_str(), v, s)).collect()
}

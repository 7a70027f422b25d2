//! The per-run database: one SQLite file per simulation run holding its
//! inputs, outputs, logs, metrics, artifacts and provenance. It is the unit
//! the cache points to and the unit the results store introspects.
//!
//! The schema is sim2l's run database (12 tables, 2 views) plus simcache's
//! additions, versioned with `PRAGMA user_version`.

mod canonical;
mod db;
mod error;
mod guard;
pub mod location;
mod params;
mod records;
mod schema;

pub use canonical::{canonical_json, write_canonical};
pub use db::{MAX_ARTIFACT_BYTES, RunDb};
pub use error::{Result, RunDbError};
pub use guard::RunGuard;
pub use location::{default_base_path, run_db_path, validate_execution_id};
pub use params::{
    Direction, ParamError, ParamSpec, RunSchema, ValueType, input_env_name, input_env_value,
};
pub use records::*;
pub use schema::SCHEMA_VERSION;

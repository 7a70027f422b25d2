//! Test harness for simcache: real PostgreSQL, real processes, real HTTP.

pub mod k8s;
pub mod pg;
pub mod process;
pub mod roles;

pub use pg::{PgServer, fresh_database};
pub use process::ServerProcess;

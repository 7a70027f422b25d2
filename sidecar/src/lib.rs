//! simcache's sidecar: the cache-aside HTTP API (wire-compatible with sim2l's
//! cache service), over SQLite or a PostgreSQL shared by every pod, and the
//! run API through which a simulation fills its per-run database.

pub mod cache;
pub mod config;
mod http;
pub mod run;
pub mod server;
pub mod sfm_proxy;

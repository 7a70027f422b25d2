//! simcache's sidecar: the cache-aside HTTP API (wire-compatible with sim2l's
//! cache service), over SQLite or a PostgreSQL shared by every pod; the run
//! API and recorder through which a simulation fills its per-run database
//! (local mode runs the recorder in-process); the systems of record's
//! read-through cache and the SFM proxy.

pub mod cache;
pub mod config;
mod http;
pub mod run;
pub mod server;
pub mod sfm_proxy;
pub mod shared;
pub mod tier;

//! simcache's operator: the Kubernetes controllers (`controller`), the pure
//! decisions they rely on (`runs`), the catalog/results/files/ingest HTTP API
//! over the shared store (`api`, `server`), and the introspection of run
//! databases into results (`introspect`).

pub mod api;
pub mod conditions;
pub mod config;
pub mod console;
pub mod controller;
pub mod introspect;
pub mod local;
pub mod runs;
pub mod server;
pub mod sweeps;
pub mod trial_db;

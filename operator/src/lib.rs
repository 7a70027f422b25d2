//! simcache's operator. Today: the catalog/results/files HTTP API over the
//! shared store, and the introspection of run databases into results. Next:
//! the Kubernetes controllers.

pub mod api;
pub mod config;
pub mod controller;
pub mod introspect;
pub mod runs;
pub mod server;

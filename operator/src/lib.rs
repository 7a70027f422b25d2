//! The `simcache-operator` binary's pieces: its command line, the trial
//! database's Secret, and the console's view of the cluster. The work itself
//! lives in `simcache-controller`, `simcache-api` and `simcache-console`.

pub mod cluster_source;
pub mod config;
pub mod trial_db;

//! A read-through cache of a system of record (an S3 bucket or a directory)
//! in every sidecar: logical keys only, disk and memory tiers, one fill per
//! object, freshness rules with stale-if-error, bounded built-in functions
//! on cached data, and cache_api's route answered compatibly.

pub mod compat;
pub mod conditional;
pub mod config;
pub mod disk;
pub mod freshness;
pub mod functions;
pub mod http;
pub mod key;
pub mod lru;
pub mod metrics;
pub mod service;
pub mod source;

pub use config::{Limits, Validation};
pub use key::Key;
pub use service::{SorConfig, SorService};

//! A read-through cache of a system of record (an S3 bucket or a directory)
//! in every sidecar: logical keys only, disk and memory tiers, one fill per
//! object, freshness rules with stale-if-error, bounded built-in functions
//! on cached data, and cache_api's route answered compatibly.

mod compat;
mod conditional;
pub mod config;
mod disk;
mod freshness;
pub mod functions;
pub mod http;
mod key;
mod lru;
pub mod metrics;
mod service;
pub mod source;

pub use config::{Limits, Validation};
pub use key::Key;
pub use service::{SorConfig, SorService};

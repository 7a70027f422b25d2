//! simcache's caching proxy for SFM seismograph services.
//!
//! - [`route`]: what a request asks for (pure).
//! - [`identity`]: which event an index names; list merging (pure).
//! - [`freshness`]: when a copy may be served (pure).
//! - [`device`]: spec checks and registration.
//! - [`registry`]: the devices this process serves.
//! - [`service`]: reads, single-flight fetches, session slots, writes.
//! - [`upstream`]: calls to the SFM service.
//! - [`http`]: the listener's routes.

pub mod device;
pub mod freshness;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod registry;
pub mod route;
pub mod service;
pub mod upstream;

pub use service::{SfmConfig, SfmService};

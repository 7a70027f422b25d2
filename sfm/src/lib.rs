//! simcache's caching proxy for SFM seismograph services.
//!
//! - [`route`]: what a request asks for (pure).
//! - `identity`: which event an index names; list merging (pure).
//! - `freshness`: when a copy may be served (pure).
//! - [`device`]: spec checks and registration.
//! - `registry`: the devices this process serves.
//! - `service`: reads, single-flight fetches, session slots, writes.
//! - `upstream`: calls to the SFM service.
//! - [`http`]: the listener's routes.

pub mod device;
mod freshness;
pub mod http;
mod identity;
pub mod metrics;
mod registry;
pub mod route;
mod service;
mod upstream;

pub use service::{SfmConfig, SfmService};

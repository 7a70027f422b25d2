//! HTTP building blocks shared by simcache's servers.

pub mod error;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod store_flags;
pub mod stream;

pub use error::ApiError;
pub use json::JsonBody;

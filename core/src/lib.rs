//! simcache's domain, without I/O: what makes two runs the same (the input
//! hash and cache key), the SimulationRun state machine and how an attempt
//! ends, what a finished run leaves in the store, cache policies, the pod of
//! an attempt (built, merged with the author's template, checked against Pod
//! Security, wired to its systems of record, and the environment it hands the
//! sidecar), sweep points and plans, status conditions, and the
//! introspection of a finished run database into a result record.
//!
//! No HTTP server and no Kubernetes client live here: the controllers, the
//! API and local mode gather facts, call these functions, and apply what they
//! return.

pub mod attempt;
pub mod cache_key;
pub mod conditions;
pub mod introspect;
pub mod lifecycle;
pub mod pod;
pub mod pod_env;
pub mod pod_settings;
pub mod policy;
pub mod record;
pub mod sweep;

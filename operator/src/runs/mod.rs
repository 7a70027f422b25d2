//! Pure decisions about SimulationRuns (no I/O): input validation against the
//! Simulation, the input hash and cache key, the pod of an attempt, how an
//! attempt ends, and which cache policy applies and what it evicts.

pub mod identity;
pub mod lifecycle;
pub mod pod;
pub mod pod_security;
pub mod pod_template;
pub mod policy;
pub mod record;
pub mod sor_wiring;
pub mod state;

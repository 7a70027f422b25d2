//! Pure decisions about SimulationSweeps (no I/O): the points a sweep
//! spans, and what it does next.

pub mod plan;
pub mod points;

/// The label every run of a sweep carries (its value: the sweep's name).
pub const LABEL_SWEEP: &str = "simcache.io/sweep";

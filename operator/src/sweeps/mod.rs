//! Pure decisions about SimulationSweeps (no I/O): the points a sweep
//! spans, and what it does next.

pub mod plan;
pub mod points;

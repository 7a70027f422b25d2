//! Pure decisions about SimulationRuns (no I/O): input validation against the
//! Simulation, the input hash and cache key.

pub mod identity;

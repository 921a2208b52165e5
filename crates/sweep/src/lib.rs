//! Sweeps: W&B's sweep config, the search methods that propose runs (`grid`, `random`,
//! `bayes`), hyperband early termination, and the `command` macros. Everything here is pure
//! (no I/O, randomness from a caller's seeded generator), so the scheduler that drives a sweep
//! can keep all of its state on the server and be resumed by any agent.

pub mod command;
pub mod config;
pub mod gp;
pub mod hyperband;
pub mod param;
pub mod search;

pub use config::{Goal, SweepConfig};
pub use param::{Distribution, Param};
pub use search::{propose, Observation};

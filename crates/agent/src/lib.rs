//! The liftoff launch agent (W&B's `LaunchAgent`, rebuilt): it registers, heartbeats,
//! long-polls its queues within its capacity, runs each item in a task of its own on a
//! [`Runner`](liftoff_runner::Runner), watches it to the end, ships its output, and reports.
//!
//! Nothing slow runs on the main loop: leasing is a long-poll the loop can abandon, every
//! run has its own task, and reports retry in those tasks. A journal in the state directory
//! lets a restarted agent re-adopt its runs.

pub mod agent;
pub mod away;
mod cleanup;
pub mod config;
mod disk;
pub mod env;
mod item;
pub mod journal;
mod lease;
mod outbox;
mod report;
mod scheduler;
mod shipper;
mod slots;
mod source;
mod spares;
mod state;
pub mod status;

pub use agent::{Agent, Control};
pub use config::{AgentConfig, ConfigErrors, Flags};
pub use report::until_answered;

//! `liftoff bench`: liftoff's own speed and footprint on this machine, printed as JSON, with
//! the floors and targets measured in the same run so that the figures compare as ratios.

mod agent;
mod container;
mod env;
mod listing;
mod queue;
mod slurm;
mod sweep;
mod upload;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// A large code directory packed and uploaded: time and the CLI's and server's peak RSS.
    Upload(upload::UploadBench),
    /// `items`, `runs` and `show` through the CLI on a database of N ended runs.
    Listing(listing::ListingBench),
    /// Enqueue rate, lease→ack→finish cycles (store and HTTP), lease latency by depth.
    Queue(queue::QueueBench),
    /// Dispatch latency, throughput against a bare spawn loop, stop latency, agent memory.
    Agent(agent::AgentBench),
    /// The container runner against the bare Engine API: start latency, throughput, memory.
    Container(container::ContainerBench),
    /// N trivial runs through liftoff into Slurm against N bare sbatch submissions.
    Slurm(slurm::SlurmBench),
    /// The environment cache: a job's first run (builds) against later runs (reuse).
    Env(env::EnvBench),
    /// random and bayes search on a known bowl, against W&B's sweeps engine.
    Sweep(sweep::SweepBench),
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Queue(b) => queue::run(b).await,
        BenchCommand::Agent(b) => agent::run(b).await,
        BenchCommand::Slurm(b) => slurm::run(b).await,
        BenchCommand::Container(b) => container::run(b).await,
        BenchCommand::Sweep(b) => sweep::run(b).await,
        BenchCommand::Env(b) => env::run(b).await,
        BenchCommand::Listing(b) => listing::run(b).await,
        BenchCommand::Upload(b) => upload::run(b).await,
    }
}

/// Percentile of sorted samples.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let x = sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    (x * 100.0).round() / 100.0
}

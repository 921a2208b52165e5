//! `liftoff bench`: liftoff's own speed and footprint on this machine, printed as JSON, with
//! the floors and targets measured in the same run so that the figures compare as ratios.

mod agent;
mod chaos;
mod container;
mod dashboard;
mod env;
mod fleet;
mod kubernetes;
mod listing;
mod queue;
mod ray;
mod rig;
mod slurm;
mod sweep;
mod upload;
mod wal;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// A large code directory packed and uploaded: time and the CLI's and server's peak RSS.
    #[command(
        after_help = "Examples:\n  liftoff bench upload\n  liftoff bench upload --size-mb 256"
    )]
    Upload(upload::UploadBench),
    /// `items`, `runs` and `show` through the CLI on a database of N ended runs.
    #[command(
        after_help = "Examples:\n  liftoff bench listing\n  liftoff bench listing --runs 10000 --samples 20"
    )]
    Listing(listing::ListingBench),
    /// The dashboard's pages on a big history: server time, weight, change-to-page latency.
    #[command(
        after_help = "Examples:\n  liftoff bench dashboard\n  liftoff bench dashboard --runs 10000 --samples 10"
    )]
    Dashboard(dashboard::DashboardBench),
    /// Enqueue rate, lease→ack→finish cycles (store and HTTP), lease latency by depth.
    #[command(
        after_help = "Examples:\n  liftoff bench queue\n  liftoff bench queue --postgres postgres://postgres@127.0.0.1/postgres"
    )]
    Queue(queue::QueueBench),
    /// Dispatch latency, throughput against a bare spawn loop, stop latency, agent memory.
    #[command(after_help = "Examples:\n  liftoff bench agent\n  liftoff bench agent --rounds 3")]
    Agent(agent::AgentBench),
    /// The container runner against the bare Engine API: start latency, throughput, memory.
    #[command(after_help = "Examples:\n  liftoff bench container")]
    Container(container::ContainerBench),
    /// N trivial runs through liftoff into Slurm against N bare sbatch submissions.
    #[command(after_help = "Examples:\n  liftoff bench slurm")]
    Slurm(slurm::SlurmBench),
    /// N trivial runs through liftoff onto Ray against N bare Jobs API submissions.
    #[command(after_help = "Examples:\n  liftoff bench ray\n  liftoff bench ray --runs 50")]
    Ray(ray::RayBench),
    /// N trivial runs through liftoff onto the Kubernetes stand-in against N bare Job creates.
    #[command(
        after_help = "Examples:\n  liftoff bench kubernetes\n  liftoff bench kubernetes --runs 20"
    )]
    Kubernetes(kubernetes::KubeBench),
    /// The environment cache: a job's first run (builds) against later runs (reuse).
    #[command(after_help = "Examples:\n  liftoff bench env")]
    Env(env::EnvBench),
    /// The SQLite WAL under sustained writes with readers: its peak, and what a stop leaves.
    #[command(
        after_help = "Examples:\n  liftoff bench wal\n  liftoff bench wal --seconds 10 --writers 4"
    )]
    Wal(wal::WalBench),
    /// A fleet of agents on one server: dispatch latency, lease call time, server memory.
    #[command(
        after_help = "Examples:\n  liftoff bench fleet\n  liftoff bench fleet --agents 1000 --items 3000 --rate 200"
    )]
    Fleet(fleet::FleetBench),
    /// Runs through agents and a server killed on a schedule: lost, duplicated, overlapping.
    #[command(
        after_help = "Examples:\n  liftoff bench chaos\n  liftoff bench chaos --runs 10000 --kills 40\n  liftoff bench chaos --postgres postgres://postgres@127.0.0.1/postgres --runs 5000"
    )]
    Chaos(chaos::ChaosBench),
    /// random and bayes search on a known bowl, against W&B's sweeps engine.
    #[command(after_help = "Examples:\n  liftoff bench sweep")]
    Sweep(sweep::SweepBench),
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Queue(b) => queue::run(b).await,
        BenchCommand::Agent(b) => agent::run(b).await,
        BenchCommand::Slurm(b) => slurm::run(b).await,
        BenchCommand::Ray(b) => ray::run(b).await,
        BenchCommand::Kubernetes(b) => kubernetes::run(b).await,
        BenchCommand::Container(b) => container::run(b).await,
        BenchCommand::Sweep(b) => sweep::run(b).await,
        BenchCommand::Env(b) => env::run(b).await,
        BenchCommand::Listing(b) => listing::run(b).await,
        BenchCommand::Dashboard(b) => dashboard::run(b).await,
        BenchCommand::Upload(b) => upload::run(b).await,
        BenchCommand::Wal(b) => wal::run(b).await,
        BenchCommand::Chaos(b) => chaos::run(b).await,
        BenchCommand::Fleet(b) => fleet::run(b).await,
    }
}

/// Starts `liftoff server` on a loopback port over `data`, with `extra` flags, quiet.
fn spawn_server(
    exe: &std::path::Path,
    data: &std::path::Path,
    extra: &[&str],
) -> anyhow::Result<std::process::Child> {
    use anyhow::Context;
    std::process::Command::new(exe)
        .args(["server", "--bind", "127.0.0.1:0"])
        .args(extra)
        .env("LIFTOFF_DATA_DIR", data)
        .env("LIFTOFF_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting liftoff server")
}

/// Waits until a `liftoff server` on `data` has written its client file.
async fn server_up(data: &std::path::Path) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(data.join("client.json")).is_ok_and(|t| t.contains("http://")) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the server did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs `liftoff ARGS` as a user would, against the server on `data`; waits for its end.
fn cli<S: AsRef<std::ffi::OsStr>>(
    exe: &std::path::Path,
    data: &std::path::Path,
    args: &[S],
) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(exe)
        .args(args)
        .env("LIFTOFF_DATA_DIR", data)
        .env_remove("LIFTOFF_URL")
        .env_remove("LIFTOFF_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()?)
}

/// A memory figure of a process from `/proc/PID/status` (`VmRSS`, `VmHWM`, ...), in KiB.
fn status_kb(pid: u32, key: &str) -> anyhow::Result<u64> {
    use anyhow::Context;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// Percentile of sorted samples.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let x = sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    (x * 100.0).round() / 100.0
}

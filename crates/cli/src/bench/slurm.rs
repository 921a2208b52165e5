//! `liftoff bench slurm`: N trivial runs through liftoff into the real Slurm against N bare
//! `sbatch` submissions of the same script, in the same run (alternating, so both see the
//! same machine), and the number of Slurm commands each issued.
//!
//! The bare side is what a user would script: `sbatch --parsable` per job, one after the
//! other, then `squeue` (asking about those jobs) every 100 ms until every job has ended. The liftoff side is
//! an in-process server (SQLite) and agent with the Slurm runner: enqueue N items, time until
//! the server has every item `finished`.

use super::rig::Rig;
use anyhow::Context;
use clap::Args;
use liftoff_runner::slurm::{command, SlurmConfig, SlurmRunner};
use liftoff_types::{LaunchSpec, ResourceType};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct SlurmBench {
    /// Jobs per measurement.
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Measurements of each side (alternating, bare first).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

pub async fn run(b: SlurmBench) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("liftoff-bench-slurm")
        .tempdir()?;
    let mut bare = Vec::new();
    let mut ours = Vec::new();
    for round in 0..b.rounds {
        bare.push(bare_sbatch(tmp.path(), b.runs).await?);
        ours.push(through_liftoff(&tmp.path().join(format!("rig{round}")), b.runs).await?);
    }
    let best = |v: &[(f64, u64)]| v.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    let (bare_s, ours_s) = (best(&bare), best(&ours));
    let ratio = ours_s / bare_s;
    let report = json!({
        "runs": b.runs,
        "bare_sbatch": {"seconds": bare.iter().map(|x| round3(x.0)).collect::<Vec<_>>(),
                        "slurm_commands": bare.iter().map(|x| x.1).collect::<Vec<_>>()},
        "liftoff": {"seconds": ours.iter().map(|x| round3(x.0)).collect::<Vec<_>>(),
                    "slurm_commands": ours.iter().map(|x| x.1).collect::<Vec<_>>()},
        "ratio_best_liftoff_to_best_bare": round3(ratio),
        "target_ratio_max": 1.2,
        "meets_target": ratio <= 1.2,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// N `sbatch` one after the other, then `squeue` until all have ended. Returns the seconds
/// and the Slurm commands issued.
async fn bare_sbatch(dir: &Path, n: usize) -> anyhow::Result<(f64, u64)> {
    let script = dir.join("bare.sbatch");
    std::fs::write(&script, "#!/bin/sh\nexec '/bin/true'\n")?;
    let start = Instant::now();
    let mut ids = Vec::with_capacity(n);
    let mut commands = 0u64;
    for _ in 0..n {
        let out = tokio::process::Command::new("sbatch")
            .args(["--parsable", "--output=/dev/null", "--job-name=bare"])
            .arg(&script)
            .output()
            .await
            .context("running sbatch (is Slurm running? scripts/services.sh start)")?;
        commands += 1;
        anyhow::ensure!(
            out.status.success(),
            "sbatch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id: u64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .parse()?;
        ids.push(id);
    }
    loop {
        let out = tokio::process::Command::new("squeue")
            .args(command::squeue_args(Some(&ids)))
            .output()
            .await?;
        commands += 1;
        let jobs = command::parse_squeue(&String::from_utf8_lossy(&out.stdout));
        anyhow::ensure!(
            jobs.len() == ids.len(),
            "squeue lost track of some bare jobs"
        );
        let live = jobs.iter().filter(|j| {
            matches!(
                command::status_of(j),
                liftoff_runner::RunStatus::Starting(_) | liftoff_runner::RunStatus::Running
            )
        });
        if live.count() == 0 {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "bare jobs never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((start.elapsed().as_secs_f64(), commands))
}

/// N items through an in-process server and agent with the Slurm runner.
async fn through_liftoff(dir: &Path, n: usize) -> anyhow::Result<(f64, u64)> {
    let mut commands = None;
    let rig = Rig::start(dir, "hpc", ResourceType::Slurm, |config| {
        let mut slurm = SlurmConfig::new(format!("liftoff:bench-{}", std::process::id()));
        slurm.poll_every = config.slurm_poll_interval;
        let runner = SlurmRunner::new(slurm);
        commands = Some(runner.command_counter());
        Arc::new(runner)
    })
    .await?;
    let start = Instant::now();
    rig.enqueue(
        n,
        &LaunchSpec::command(vec!["/bin/true".into()]),
        &json!({}),
    )
    .await?;
    rig.wait_finished(n, start).await?;
    let seconds = start.elapsed().as_secs_f64();
    rig.stop().await;
    Ok((seconds, commands.map_or(0, |c| c.load(Ordering::Relaxed))))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

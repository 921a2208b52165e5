//! The Slurm runner: a run is a batch job submitted with `sbatch`.
//!
//! - The job's name carries the run id (`liftoff-RUN`) and its comment the agent's label, so
//!   a restarted agent finds its jobs ([`Runner::owned`]).
//! - The state of *every* job comes from one `squeue --json` per poll interval, however many
//!   runs are watched or asked about: callers share the latest answer, and a caller that
//!   needs a fresher one waits for the single poll in flight. (Workflow tools that poll per
//!   job are known to overload Slurm controllers.)
//! - Stop: `scancel --signal=TERM --full` (the batch script and its children), the grace,
//!   then `scancel` (which ends every process of the job).
//! - The job's output file is the run's output file, which the agent ships as it grows.
//!
//! Command building and output parsing live in [`command`] as pure functions.

pub mod command;

use crate::{Handle, RunSpec, RunStatus, Runner, RunnerError, RunnerResult};
use async_trait::async_trait;
use command::Job;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// How the runner reaches Slurm and names its jobs.
#[derive(Clone, Debug)]
pub struct SlurmConfig {
    /// Put in every job's comment; a stable name for the agent (its state directory's).
    pub label: String,
    /// How often `squeue` is asked, at most.
    pub poll_every: Duration,
    /// Where `sbatch`, `squeue` and `scancel` are (empty: on `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// The longest a Slurm command may take.
    pub command_timeout: Duration,
}

impl SlurmConfig {
    pub fn new(label: impl Into<String>) -> SlurmConfig {
        SlurmConfig {
            label: label.into(),
            poll_every: Duration::from_millis(500),
            bin_dir: None,
            command_timeout: Duration::from_secs(30),
        }
    }
}

/// What the Slurm runner keeps in a [`Handle`]'s data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmHandle {
    pub job_id: u64,
}

impl SlurmHandle {
    pub fn of(handle: &Handle) -> RunnerResult<SlurmHandle> {
        serde_json::from_value(handle.data.clone())
            .map_err(|e| RunnerError::Permanent(format!("not a Slurm handle: {e}")))
    }
}

#[derive(Default)]
struct Seen {
    /// When the last `squeue` started (answers are at least this fresh).
    at: Option<Instant>,
    jobs: HashMap<u64, Job>,
    /// When each job this runner submitted was accepted: a poll that started before it may
    /// not show it yet.
    submitted: HashMap<u64, Instant>,
}

pub struct SlurmRunner {
    config: SlurmConfig,
    seen: Mutex<Seen>,
    /// Held while an `squeue` runs, so concurrent callers share one.
    polling: tokio::sync::Mutex<()>,
    commands: Arc<AtomicU64>,
}

impl SlurmRunner {
    pub fn new(config: SlurmConfig) -> SlurmRunner {
        SlurmRunner {
            config,
            seen: Mutex::new(Seen::default()),
            polling: tokio::sync::Mutex::new(()),
            commands: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Slurm commands issued so far (sbatch, squeue, scancel), for benchmarks and tests.
    pub fn commands_issued(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
    }

    /// A counter shared with the runner, readable after the runner has been moved.
    pub fn command_counter(&self) -> Arc<AtomicU64> {
        self.commands.clone()
    }

    fn program(&self, name: &str) -> PathBuf {
        match &self.config.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// Runs one Slurm command; its stdout, or an error saying whether to retry.
    async fn slurm(&self, name: &str, args: &[String]) -> RunnerResult<String> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let mut cmd = Command::new(self.program(name));
        cmd.args(args).kill_on_drop(true);
        let out = tokio::time::timeout(self.config.command_timeout, cmd.output())
            .await
            .map_err(|_| RunnerError::Transient(format!("{name} did not answer in time")))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    RunnerError::Permanent(format!("{name} not found: is Slurm installed here?"))
                }
                _ => RunnerError::Transient(format!("cannot run {name}: {e}")),
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let message = format!("{name} failed: {err}");
            return Err(if command::is_transient(&err) {
                RunnerError::Transient(message)
            } else {
                RunnerError::Permanent(message)
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Makes sure the jobs seen are from a poll started no earlier than `fresh_after`.
    async fn refresh(&self, fresh_after: Instant) -> RunnerResult<()> {
        let _one_at_a_time = self.polling.lock().await;
        if lock(&self.seen).at.is_some_and(|at| at >= fresh_after) {
            return Ok(());
        }
        let started = Instant::now();
        let text = self.slurm("squeue", &["--json".to_string()]).await?;
        let jobs = command::parse_squeue(&text).map_err(RunnerError::Transient)?;
        let mut seen = lock(&self.seen);
        seen.jobs = command::by_id(jobs);
        seen.at = Some(started);
        Ok(())
    }

    /// The state of one job from the latest poll.
    fn status_seen(&self, job: u64) -> RunStatus {
        let seen = lock(&self.seen);
        match seen.jobs.get(&job) {
            Some(j) => command::status_of(j),
            None => match (seen.submitted.get(&job), seen.at) {
                // Submitted after the poll began: not known yet, not gone.
                (Some(sub), Some(at)) if *sub > at => RunStatus::Starting(None),
                (Some(_), None) => RunStatus::Starting(None),
                _ => RunStatus::Gone,
            },
        }
    }

    async fn poll_status(&self, job: u64) -> RunnerResult<RunStatus> {
        self.refresh(Instant::now() - self.config.poll_every)
            .await?;
        Ok(self.status_seen(job))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ended(status: &RunStatus) -> bool {
    !matches!(status, RunStatus::Starting(_) | RunStatus::Running)
}

#[async_trait]
impl Runner for SlurmRunner {
    fn resource(&self) -> &'static str {
        "slurm"
    }

    async fn check(&self, spec: &RunSpec) -> RunnerResult<()> {
        command::resource_options(&spec.resource_args)
            .map(|_| ())
            .map_err(|p| RunnerError::Permanent(p.join("; ")))?;
        if spec.argv.is_empty() {
            return Err(RunnerError::Permanent("the run has no command".into()));
        }
        Ok(())
    }

    async fn launch(&self, spec: &RunSpec) -> RunnerResult<Handle> {
        self.check(spec).await?;
        let run_dir = spec.workdir.parent().unwrap_or(&spec.workdir);
        let script = run_dir.join("job.sbatch");
        // The script holds the run's token: readable by its owner only.
        write_private(&script, command::batch_script(spec).as_bytes())
            .map_err(|e| RunnerError::Transient(format!("writing {}: {e}", script.display())))?;
        let args = command::sbatch_args(spec, &self.config.label, &script)
            .map_err(RunnerError::Permanent)?;
        let out = self.slurm("sbatch", &args).await?;
        // `--parsable` prints `ID` or `ID;CLUSTER`.
        let id = out.trim().split(';').next().unwrap_or("");
        let job_id: u64 = id
            .parse()
            .map_err(|_| RunnerError::Transient(format!("sbatch printed {out:?}, not a job id")))?;
        lock(&self.seen).submitted.insert(job_id, Instant::now());
        Ok(Handle {
            run_id: spec.run_id.clone(),
            data: serde_json::json!({ "job_id": job_id }),
        })
    }

    async fn status(&self, handles: &[Handle]) -> RunnerResult<Vec<RunStatus>> {
        self.refresh(Instant::now() - self.config.poll_every)
            .await?;
        handles
            .iter()
            .map(|h| Ok(self.status_seen(SlurmHandle::of(h)?.job_id)))
            .collect()
    }

    async fn wait(&self, handle: &Handle) -> RunnerResult<RunStatus> {
        let job = SlurmHandle::of(handle)?.job_id;
        loop {
            let status = self.poll_status(job).await?;
            if ended(&status) {
                return Ok(status);
            }
            tokio::time::sleep(self.config.poll_every).await;
        }
    }

    async fn cancel(&self, handle: &Handle, grace: Duration) -> RunnerResult<()> {
        let job = SlurmHandle::of(handle)?.job_id.to_string();
        let status = self.poll_status(job.parse().unwrap_or(0)).await?;
        if ended(&status) {
            return Ok(());
        }
        if matches!(status, RunStatus::Running) && !grace.is_zero() {
            // Signals reach a running job only; a pending one is simply removed below.
            let term = [
                "--signal=TERM".to_string(),
                "--full".to_string(),
                job.clone(),
            ];
            let _ = self.slurm("scancel", &term).await;
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                tokio::time::sleep(self.config.poll_every).await;
                if ended(&self.poll_status(job.parse().unwrap_or(0)).await?) {
                    return Ok(());
                }
            }
        }
        self.slurm("scancel", std::slice::from_ref(&job)).await?;
        Ok(())
    }

    async fn owned(&self) -> RunnerResult<Vec<Handle>> {
        self.refresh(Instant::now()).await?;
        let seen = lock(&self.seen);
        Ok(seen
            .jobs
            .values()
            .filter(|j| j.comment == self.config.label)
            .filter_map(|j| {
                let run = command::run_of_job_name(&j.name)?.parse().ok()?;
                Some(Handle {
                    run_id: run,
                    data: serde_json::json!({ "job_id": j.id }),
                })
            })
            .collect())
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}

//! The Slurm runner: a run is a batch job submitted with `sbatch`.
//!
//! - The job's name carries the run id (`liftoff-RUN`) and its comment the agent's label, so
//!   a restarted agent finds its jobs ([`Runner::owned`]).
//! - The state of *every* job the agent watches comes from one `squeue` per poll interval
//!   (`--jobs=` all of them, exit codes included), however many runs are watched or asked
//!   about: callers share the latest answer, and a caller that needs a fresher one waits for
//!   the single poll in flight. (Workflow tools that poll per job are known to overload
//!   Slurm controllers; and `squeue --json` ignores filters and prints every job the
//!   controller remembers, megabytes on a busy cluster, so it is not used.)
//! - Stop: `scancel --signal=TERM --full` (the batch script and its children), the grace,
//!   then `scancel` (which ends every process of the job).
//! - The job's output file is the run's output file, which the agent ships as it grows.
//!
//! Command building and output parsing live in [`command`] as pure functions.

pub mod command;

use crate::{Handle, RunSpec, RunStatus, Runner, RunnerError, RunnerResult};
use async_trait::async_trait;
use command::Job;
use liftoff_types::ResourceType;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
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
    /// The jobs the last `squeue` asked about.
    asked: HashSet<u64>,
    /// Jobs someone asked about lately, with when: the next `squeue` covers them all.
    watched: HashMap<u64, Instant>,
}

/// A job nobody asked about for this long drops out of the polls.
const FORGET_AFTER: Duration = Duration::from_secs(30);

pub struct SlurmRunner {
    config: SlurmConfig,
    seen: Mutex<Seen>,
    /// Held while an `squeue` runs, so concurrent callers share one.
    polling: tokio::sync::Mutex<()>,
    /// Bounds the `sbatch` processes in flight: a burst of items must not become a burst of
    /// hundreds of processes contending for the controller (and the agent's CPU).
    submitting: tokio::sync::Semaphore,
    commands: Arc<AtomicU64>,
}

/// `sbatch` processes at once.
const SUBMITTERS: usize = 4;
/// How long a submission keeps trying while the controller is busy or unreachable.
const SUBMIT_FOR: Duration = Duration::from_secs(60);

impl SlurmRunner {
    pub fn new(config: SlurmConfig) -> SlurmRunner {
        SlurmRunner {
            config,
            seen: Mutex::new(Seen::default()),
            polling: tokio::sync::Mutex::new(()),
            submitting: tokio::sync::Semaphore::new(SUBMITTERS),
            commands: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Slurm commands issued so far (sbatch, squeue, scancel), for benchmarks: a counter
    /// shared with the runner, readable after the runner has been moved.
    pub fn command_counter(&self) -> Arc<AtomicU64> {
        self.commands.clone()
    }

    fn program(&self, name: &str) -> PathBuf {
        match &self.config.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// Runs one Slurm command; its stdout, or an error saying whether to retry. With `env`,
    /// the command gets that environment only (plus `SLURM_CONF`, to find the controller).
    async fn slurm_with(
        &self,
        name: &str,
        args: &[String],
        env: Option<&crate::RunEnv>,
    ) -> RunnerResult<String> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let mut cmd = Command::new(self.program(name));
        cmd.args(args).kill_on_drop(true);
        if let Some(env) = env {
            cmd.env_clear();
            if let Some(conf) = std::env::var_os("SLURM_CONF") {
                cmd.env("SLURM_CONF", conf);
            }
            cmd.envs(env.iter().filter(|(k, _)| command::is_env_name(k)));
        }
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

    async fn slurm(&self, name: &str, args: &[String]) -> RunnerResult<String> {
        self.slurm_with(name, args, None).await
    }

    /// Submits with `sbatch`, trying again while the controller is busy or unreachable (a
    /// refusal it printed means the job was not taken). When `sbatch` itself timed out the job
    /// may have been taken after all, so the run's job is looked up by name before another
    /// try: a run is never submitted twice.
    async fn submit(&self, spec: &RunSpec, args: &[String]) -> RunnerResult<u64> {
        let mut pause = Duration::from_millis(500);
        let give_up = Instant::now() + SUBMIT_FOR;
        loop {
            let tried = {
                let _turn =
                    self.submitting.acquire().await.map_err(|_| {
                        RunnerError::Transient("the runner is shutting down".into())
                    })?;
                self.slurm_with("sbatch", args, Some(&spec.env)).await
            };
            let error = match tried {
                Ok(out) => {
                    // `--parsable` prints `ID` or `ID;CLUSTER`.
                    let id = out.trim().split(';').next().unwrap_or("");
                    return id.parse().map_err(|_| {
                        RunnerError::Permanent(format!("sbatch printed {out:?}, not a job id"))
                    });
                }
                Err(RunnerError::Transient(e)) => e,
                Err(permanent) => return Err(permanent),
            };
            if let Some(job) = self.job_of(&spec.run_id).await {
                return Ok(job);
            }
            if Instant::now() + pause > give_up {
                return Err(RunnerError::Transient(error));
            }
            tracing::warn!(run = %spec.run_id, error = %error, "sbatch failed; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(8));
        }
    }

    /// The job already submitted for `run`, if the controller knows one.
    async fn job_of(&self, run: &liftoff_types::RunId) -> Option<u64> {
        let text = self
            .slurm("squeue", &command::squeue_args(None))
            .await
            .ok()?;
        command::parse_squeue(&text)
            .into_iter()
            .find(|j| j.comment == self.config.label && j.name == command::job_name(run.as_str()))
            .map(|j| j.id)
    }

    /// Makes sure every watched job was seen by a poll started no earlier than
    /// `fresh_after`; one `squeue` for all of them.
    async fn refresh(&self, fresh_after: Instant) -> RunnerResult<()> {
        let _one_at_a_time = self.polling.lock().await;
        let ids: Vec<u64> = {
            let mut seen = lock(&self.seen);
            let fresh = seen.at.is_some_and(|at| at >= fresh_after);
            let covered = seen.watched.keys().all(|id| seen.asked.contains(id));
            if fresh && covered {
                return Ok(());
            }
            let now = Instant::now();
            seen.watched
                .retain(|_, asked| now.duration_since(*asked) < FORGET_AFTER);
            seen.watched.keys().copied().collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let text = self
            .slurm("squeue", &command::squeue_args(Some(&ids)))
            .await?;
        let mut seen = lock(&self.seen);
        seen.jobs = command::by_id(command::parse_squeue(&text));
        seen.asked = ids.into_iter().collect();
        seen.at = Some(started);
        Ok(())
    }

    /// Adds jobs to the next polls.
    fn watch(&self, jobs: &[u64]) {
        let now = Instant::now();
        let mut seen = lock(&self.seen);
        for job in jobs {
            seen.watched.insert(*job, now);
        }
    }

    /// The state of one job from the latest poll that asked about it.
    fn status_seen(&self, job: u64) -> RunStatus {
        let seen = lock(&self.seen);
        match seen.jobs.get(&job) {
            Some(j) => command::status_of(j),
            None if seen.asked.contains(&job) => RunStatus::Gone,
            // Not asked about yet (it was submitted after the poll began).
            None => RunStatus::Starting(None),
        }
    }

    async fn poll_status(&self, job: u64) -> RunnerResult<RunStatus> {
        self.watch(&[job]);
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
    fn resource(&self) -> ResourceType {
        ResourceType::Slurm
    }

    fn poll_every(&self) -> Duration {
        self.config.poll_every
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
        write_private(&script, command::batch_script(spec).as_bytes())
            .map_err(|e| RunnerError::Transient(format!("writing {}: {e}", script.display())))?;
        let args = command::sbatch_args(spec, &self.config.label, &script)
            .map_err(RunnerError::Permanent)?;
        let job_id = self.submit(spec, &args).await?;
        self.watch(&[job_id]);
        Ok(Handle {
            runner: ResourceType::Slurm,
            run_id: spec.run_id.clone(),
            data: serde_json::json!({ "job_id": job_id }),
        })
    }

    async fn status(&self, handles: &[Handle]) -> RunnerResult<Vec<RunStatus>> {
        let jobs = handles
            .iter()
            .map(|h| Ok(SlurmHandle::of(h)?.job_id))
            .collect::<RunnerResult<Vec<u64>>>()?;
        self.watch(&jobs);
        self.refresh(Instant::now() - self.config.poll_every)
            .await?;
        Ok(jobs.iter().map(|job| self.status_seen(*job)).collect())
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
        let id = SlurmHandle::of(handle)?.job_id;
        let job = id.to_string();
        let status = self.poll_status(id).await?;
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
                if ended(&self.poll_status(id).await?) {
                    return Ok(());
                }
            }
        }
        self.slurm("scancel", std::slice::from_ref(&job)).await?;
        Ok(())
    }

    async fn owned(&self) -> RunnerResult<Vec<Handle>> {
        let text = self.slurm("squeue", &command::squeue_args(None)).await?;
        Ok(command::parse_squeue(&text)
            .into_iter()
            .filter(|j| j.comment == self.config.label)
            .filter_map(|j| {
                let run = command::run_of_job_name(&j.name)?.parse().ok()?;
                Some(Handle {
                    runner: ResourceType::Slurm,
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

//! The Ray runner: a run is a Ray Job, submitted to the Jobs REST API of the cluster's
//! dashboard (`address` in the queue's resource args, else the agent's `runners.ray.address`).
//!
//! - **Exactly once**: the run id is the job's `submission_id`. Ray refuses a second job
//!   under one id, so a submit retried after a timeout or a crash finds the first and adopts
//!   it; a restarted agent finds its jobs by id (its journal) and by the `liftoff_agent`
//!   metadata ([`Runner::owned`]).
//! - **Code as Ray sends it**: a job's source goes up once per content hash as a Ray package
//!   ([`package`]) and becomes `runtime_env.working_dir`; its `requirements.txt` becomes
//!   `runtime_env.pip`.
//! - **One list call per interval**: the state of every watched job on a cluster comes from
//!   one `GET /api/jobs/`, shared by all callers (as the Slurm runner shares one `squeue`).
//! - **Output**: Ray's log of a job is read whole (the API has no offset) and what the run's
//!   output file does not hold yet is appended, so a reconnect or a restarted agent writes no
//!   line twice and loses none.
//! - **Fencing**: a later attempt of an item first stops any live job of an earlier attempt
//!   (found by its `liftoff_attempt_of` metadata).
//!
//! The run gets its own variables only (`runtime_env.env_vars`), never the agent's
//! environment: the cluster is another machine.

pub mod api;
pub mod package;

use crate::{Capabilities, Handle, RunSpec, RunStatus, Runner, RunnerError, RunnerResult};
use api::{Api, JobInfo, Submitted};
use async_trait::async_trait;
use liftoff_types::ray::RayArgs;
use liftoff_types::ResourceType;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the runner reaches Ray and marks its jobs.
#[derive(Clone, Debug)]
pub struct RayConfig {
    /// Put in every job's metadata (`liftoff_agent`): the agent's stable label.
    pub label: String,
    /// The cluster for queues whose resource args name none.
    pub address: Option<String>,
    /// Sent with every call (Ray's `RAY_JOB_HEADERS`: an auth header in front of the
    /// dashboard).
    pub headers: Vec<(String, String)>,
    /// How often the job list is read, at most.
    pub poll_every: Duration,
    /// Where the runner remembers the clusters it submitted to, so that a restarted agent
    /// lists them all.
    pub state_dir: PathBuf,
}

impl RayConfig {
    pub fn new(label: impl Into<String>, state_dir: impl Into<PathBuf>) -> RayConfig {
        RayConfig {
            label: label.into(),
            address: None,
            headers: Vec::new(),
            poll_every: Duration::from_millis(500),
            state_dir: state_dir.into(),
        }
    }
}

/// What the Ray runner keeps in a [`Handle`]'s data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RayHandle {
    pub address: String,
    pub submission_id: String,
    pub output: Option<PathBuf>,
}

impl RayHandle {
    pub fn of(handle: &Handle) -> RunnerResult<RayHandle> {
        serde_json::from_value(handle.data.clone())
            .map_err(|e| RunnerError::Permanent(format!("not a Ray handle: {e}")))
    }
}

/// The latest job list of one cluster.
#[derive(Default)]
struct Seen {
    at: Option<Instant>,
    jobs: HashMap<String, JobInfo>,
}

pub struct RayRunner {
    config: RayConfig,
    http: reqwest::Client,
    seen: Mutex<HashMap<String, Seen>>,
    /// Held while a list call runs, so concurrent callers share one.
    polling: tokio::sync::Mutex<()>,
    /// Clusters submitted to (also in `state_dir`).
    addresses: Mutex<HashSet<String>>,
    /// When each job was submitted: a list read before that does not show it yet.
    submitted: Mutex<HashMap<String, Instant>>,
    calls: Arc<AtomicU64>,
}

/// The file in the state directory naming the clusters submitted to, one per line.
const ADDRESSES: &str = "ray-clusters";
/// How long a submission keeps trying while the cluster is unreachable or busy.
const SUBMIT_FOR: Duration = Duration::from_secs(60);
/// The most a stop waits for Ray to say the job ended, past the grace (Ray sends SIGKILL
/// `RAY_JOB_STOP_WAIT_TIME_S`, 3 s by default, after its SIGTERM).
const STOP_SETTLE: Duration = Duration::from_secs(10);
/// How long `wait` keeps asking a cluster that does not answer before it gives up on a run.
const UNANSWERED_FOR: Duration = Duration::from_secs(300);

impl RayRunner {
    pub fn new(config: RayConfig) -> RayRunner {
        let mut addresses: HashSet<String> =
            std::fs::read_to_string(config.state_dir.join(ADDRESSES))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
        addresses.extend(config.address.clone());
        RayRunner {
            config,
            http: reqwest::Client::new(),
            seen: Mutex::new(HashMap::new()),
            polling: tokio::sync::Mutex::new(()),
            addresses: Mutex::new(addresses),
            submitted: Mutex::new(HashMap::new()),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Ray API calls made so far, for benchmarks.
    pub fn call_counter(&self) -> Arc<AtomicU64> {
        self.calls.clone()
    }

    fn api<'a>(&'a self, address: &'a str) -> Api<'a> {
        Api {
            http: &self.http,
            base: address,
            headers: &self.config.headers,
            calls: &self.calls,
        }
    }

    /// Remembers a cluster before the first submission to it, so a restart lists it.
    fn remember(&self, address: &str) -> RunnerResult<()> {
        let mut known = lock(&self.addresses);
        if known.contains(address) {
            return Ok(());
        }
        let path = self.config.state_dir.join(ADDRESSES);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{address}").and_then(|()| f.sync_data()));
        written.map_err(|e| RunnerError::Transient(format!("writing {}: {e}", path.display())))?;
        known.insert(address.to_string());
        Ok(())
    }

    /// Makes sure the job list of `address` was read no earlier than `fresh_after`.
    async fn refresh(&self, address: &str, fresh_after: Instant) -> RunnerResult<()> {
        let _one_at_a_time = self.polling.lock().await;
        let fresh = lock(&self.seen)
            .get(address)
            .and_then(|s| s.at)
            .is_some_and(|at| at >= fresh_after);
        if fresh {
            return Ok(());
        }
        let started = Instant::now();
        let jobs = self.api(address).list().await?;
        let jobs = jobs
            .into_iter()
            .filter_map(|j| Some((j.submission_id.clone()?, j)))
            .collect();
        lock(&self.seen).insert(
            address.to_string(),
            Seen {
                at: Some(started),
                jobs,
            },
        );
        Ok(())
    }

    /// A job's state from a list read within the poll interval.
    async fn job(&self, h: &RayHandle) -> RunnerResult<RunStatus> {
        self.refresh(&h.address, Instant::now() - self.config.poll_every)
            .await?;
        Ok(self.seen_status(h))
    }

    /// A job's state as the latest list of its cluster has it; one submitted after that
    /// list was read is `starting`, not gone.
    fn seen_status(&self, h: &RayHandle) -> RunStatus {
        let seen = lock(&self.seen);
        let list = seen.get(&h.address);
        if let Some(job) = list.and_then(|s| s.jobs.get(&h.submission_id)) {
            return api::status_of(job);
        }
        let read_at = list.and_then(|s| s.at);
        let submitted = lock(&self.submitted).get(&h.submission_id).copied();
        match (read_at, submitted) {
            (Some(read), Some(sent)) if read < sent => RunStatus::Starting(None),
            (None, Some(_)) => RunStatus::Starting(None),
            _ => RunStatus::Gone,
        }
    }

    /// The job as Ray has it now.
    async fn job_now(&self, h: &RayHandle) -> RunnerResult<Option<JobInfo>> {
        self.refresh(&h.address, Instant::now()).await?;
        Ok(lock(&self.seen)
            .get(&h.address)
            .and_then(|s| s.jobs.get(&h.submission_id).cloned()))
    }

    /// The job's log past what the output file holds, appended to it.
    async fn pull_logs(&self, h: &RayHandle) -> RunnerResult<()> {
        let Some(output) = &h.output else {
            return Ok(());
        };
        let logs = self.api(&h.address).logs(&h.submission_id).await?;
        let output = output.clone();
        let written = tokio::task::spawn_blocking(move || append_new(&output, logs.as_bytes()))
            .await
            .map_err(|e| RunnerError::Transient(e.to_string()))?;
        written.map_err(|e| RunnerError::Transient(format!("writing the run's output: {e}")))
    }

    /// A spec's resource args and cluster, or why the runner cannot run it.
    fn checked(&self, spec: &RunSpec) -> RunnerResult<(RayArgs, String)> {
        let args = RayArgs::parse(&spec.resource_args, "resource_args").map_err(|p| {
            RunnerError::Permanent(
                p.iter()
                    .map(|(at, m)| format!("{at}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let address = address_of(&args, &self.config)?;
        if spec.image.is_some() {
            return Err(RunnerError::Permanent(
                "a Ray queue runs no images: launch a code job or a command".into(),
            ));
        }
        if spec.argv.is_empty() {
            return Err(RunnerError::Permanent("the run has no command".into()));
        }
        Ok((args, address))
    }

    /// The `POST /api/jobs/` body for a run.
    async fn submission(
        &self,
        spec: &RunSpec,
        args: &RayArgs,
        address: &str,
    ) -> RunnerResult<serde_json::Value> {
        let mut runtime_env = args.runtime_env.clone();
        let workdir = spec.workdir.clone();
        let made = tokio::task::spawn_blocking(move || {
            package::make(&workdir).map(|p| (p, package::requirements(&workdir)))
        })
        .await
        .map_err(|e| RunnerError::Transient(e.to_string()))?;
        let (package, pip) = made.map_err(RunnerError::Permanent)?;
        if let Some(package) = package {
            let api = self.api(address);
            if !api.package_exists(&package.uri).await? {
                tracing::info!(run = %spec.run_id, uri = %package.uri, bytes = package.zip.len(), "uploading the run's source to Ray");
                api.upload_package(&package.uri, package.zip).await?;
            }
            runtime_env.insert("working_dir".into(), package.uri.into());
        }
        let has_packages = ["pip", "uv", "conda"]
            .iter()
            .any(|k| runtime_env.contains_key(*k));
        if let (Some(pip), false) = (pip, has_packages) {
            runtime_env.insert("pip".into(), pip.into());
        }
        // The queue's variables under the run's own (liftoff's names are refused in the
        // queue's at enqueue).
        let mut env_vars = runtime_env
            .remove("env_vars")
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        for (name, value) in &spec.env.own {
            env_vars.insert(name.clone(), value.clone().into());
        }
        runtime_env.insert("env_vars".into(), env_vars.into());
        let mut metadata: serde_json::Map<String, serde_json::Value> = args
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        metadata.insert("liftoff_run".into(), spec.run_id.to_string().into());
        metadata.insert("liftoff_agent".into(), self.config.label.clone().into());
        if let Some(of) = &spec.attempt_of {
            metadata.insert("liftoff_attempt_of".into(), of.clone().into());
        }
        metadata.insert("liftoff_attempt".into(), attempt(spec).into());
        let mut body = serde_json::json!({
            "entrypoint": shell_join(&spec.argv),
            "submission_id": spec.run_id.to_string(),
            "runtime_env": runtime_env,
            "metadata": metadata,
        });
        if let Some(n) = args.entrypoint_num_cpus {
            body["entrypoint_num_cpus"] = n.into();
        }
        if let Some(n) = args.entrypoint_num_gpus {
            body["entrypoint_num_gpus"] = n.into();
        }
        if let Some(n) = args.entrypoint_memory {
            body["entrypoint_memory"] = n.into();
        }
        if !args.entrypoint_resources.is_empty() {
            body["entrypoint_resources"] = serde_json::json!(args.entrypoint_resources);
        }
        Ok(body)
    }

    /// Stops the live jobs of earlier attempts of the same item (their agent is gone, or
    /// they would not be retried), before this attempt starts.
    async fn fence(&self, address: &str, spec: &RunSpec) -> RunnerResult<()> {
        let Some(of) = &spec.attempt_of else {
            return Ok(());
        };
        if attempt(spec) == "1" {
            return Ok(());
        }
        self.refresh(address, Instant::now()).await?;
        let earlier: Vec<String> = lock(&self.seen)
            .get(address)
            .map(|s| {
                s.jobs
                    .values()
                    .filter(|j| j.meta("liftoff_attempt_of") == Some(of.as_str()) && !j.ended())
                    .filter_map(|j| j.submission_id.clone())
                    .filter(|id| id != spec.run_id.as_str())
                    .collect()
            })
            .unwrap_or_default();
        for id in earlier {
            tracing::info!(run = %spec.run_id, earlier = %id, "stopping an earlier attempt's Ray job");
            self.api(address).stop(&id).await?;
        }
        Ok(())
    }

    /// Submits, trying again while Ray is unreachable or busy; a job already under the run's
    /// id (an earlier try that Ray took before its answer was lost) is adopted if it is this
    /// run's.
    async fn submit(
        &self,
        address: &str,
        body: &serde_json::Value,
        spec: &RunSpec,
    ) -> RunnerResult<()> {
        let api = self.api(address);
        let id = spec.run_id.as_str();
        let mut pause = Duration::from_millis(250);
        let give_up = Instant::now() + SUBMIT_FOR;
        let mut replaced = false;
        loop {
            let error = match api.submit(body).await {
                Ok(Submitted::New) => return Ok(()),
                Ok(Submitted::Exists) => match api.get(id).await? {
                    Some(job) if is_this_attempt(&job, spec) => {
                        tracing::info!(run = %id, "Ray already had the run's job: adopting it");
                        return Ok(());
                    }
                    // An earlier attempt of the same run id (a retry keeps a fixed id): its
                    // record goes, and this attempt takes the id.
                    Some(job)
                        if job.meta("liftoff_run") == Some(id) && job.ended() && !replaced =>
                    {
                        replaced = true;
                        tracing::info!(run = %id, "removing an earlier attempt's ended Ray job");
                        api.delete(id).await?;
                        continue;
                    }
                    Some(job) if job.meta("liftoff_run") == Some(id) => {
                        return Err(RunnerError::Transient(format!(
                            "an earlier attempt's Ray job {id:?} still runs; waiting for it to stop"
                        )));
                    }
                    _ => {
                        return Err(RunnerError::Permanent(format!(
                            "Ray at {address} already has a job {id:?} that is not this run's"
                        )))
                    }
                },
                Err(RunnerError::Transient(e)) => e,
                Err(permanent) => return Err(permanent),
            };
            if let Ok(Some(job)) = api.get(id).await {
                if is_this_attempt(&job, spec) {
                    return Ok(());
                }
            }
            if Instant::now() + pause > give_up {
                return Err(RunnerError::Transient(error));
            }
            tracing::warn!(run = %id, error = %error, "submitting to Ray failed; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(8));
        }
    }
}

/// Which attempt of its item a run is (`LIFTOFF_ATTEMPT`, 1 for the first).
fn attempt(spec: &RunSpec) -> String {
    spec.env
        .get("LIFTOFF_ATTEMPT")
        .cloned()
        .unwrap_or_else(|| "1".into())
}

/// A job on Ray is this attempt's own (submitted by an earlier try of this launch).
fn is_this_attempt(job: &JobInfo, spec: &RunSpec) -> bool {
    job.meta("liftoff_run") == Some(spec.run_id.as_str())
        && job.meta("liftoff_attempt").unwrap_or("1") == attempt(spec)
        && job.meta("liftoff_attempt_of") == spec.attempt_of.as_deref()
}

/// The cluster a run goes to.
fn address_of(args: &RayArgs, config: &RayConfig) -> RunnerResult<String> {
    args.address
        .clone()
        .or_else(|| config.address.clone())
        .map(|a| a.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            RunnerError::Permanent(
                "no Ray cluster to submit to: set `address` in the queue's resource args \
                 (http://HOST:8265) or runners.ray.address in the agent's config"
                    .into(),
            )
        })
}

/// Appends what `log` has past the file's length.
fn append_new(path: &std::path::Path, log: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let have = file.metadata()?.len() as usize;
    if log.len() > have {
        file.write_all(&log[have..])?;
    }
    Ok(())
}

/// An argv as one shell command line (Ray's entrypoint is run by a shell).
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,@%+".contains(&b));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ended(status: &RunStatus) -> bool {
    !matches!(status, RunStatus::Starting(_) | RunStatus::Running)
}

#[async_trait]
impl Runner for RayRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::Ray
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            images: false,
            runs_at_launch: false,
            // Ray keeps every job; what `owned` lists are the live ones, which the
            // reconcile pass stops when no run of the agent claims them.
            keeps_ended: true,
            sandboxed: true,
            keeps_lease: false,
            ships_source: true,
        }
    }

    fn poll_every(&self) -> Duration {
        self.config.poll_every
    }

    async fn check(&self, spec: &RunSpec) -> RunnerResult<()> {
        self.checked(spec).map(|_| ())
    }

    async fn launch(&self, spec: &RunSpec) -> RunnerResult<Handle> {
        let (args, address) = self.checked(spec)?;
        self.remember(&address)?;
        self.fence(&address, spec).await?;
        let body = self.submission(spec, &args, &address).await?;
        self.submit(&address, &body, spec).await?;
        // After Ray's answer: a list read from now on shows the job.
        lock(&self.submitted).insert(spec.run_id.to_string(), Instant::now());
        let data = RayHandle {
            address,
            submission_id: spec.run_id.to_string(),
            output: Some(spec.output.clone()),
        };
        Ok(Handle {
            runner: ResourceType::Ray,
            run_id: spec.run_id.clone(),
            data: serde_json::to_value(data).map_err(|e| RunnerError::Permanent(e.to_string()))?,
        })
    }

    async fn status(&self, handles: &[Handle]) -> RunnerResult<Vec<RunStatus>> {
        let handles = handles
            .iter()
            .map(RayHandle::of)
            .collect::<RunnerResult<Vec<_>>>()?;
        let fresh_after = Instant::now() - self.config.poll_every;
        let addresses: HashSet<&str> = handles.iter().map(|h| h.address.as_str()).collect();
        for address in addresses {
            self.refresh(address, fresh_after).await?;
        }
        Ok(handles.iter().map(|h| self.seen_status(h)).collect())
    }

    /// Polls the shared job list and pulls the job's log as it grows; the whole log is in
    /// the output file before the end is returned.
    async fn wait(&self, handle: &Handle) -> RunnerResult<RunStatus> {
        let h = RayHandle::of(handle)?;
        let mut logs_every = self.config.poll_every;
        let mut logs_at: Option<Instant> = None;
        let mut unanswered_since: Option<Instant> = None;
        loop {
            // Missing from the list: asked by id before it counts as gone.
            let asked = match self.job(&h).await {
                Ok(RunStatus::Gone) => self
                    .api(&h.address)
                    .get(&h.submission_id)
                    .await
                    .map(|job| job.as_ref().map_or(RunStatus::Gone, api::status_of)),
                other => other,
            };
            let status = match asked {
                Ok(status) => {
                    unanswered_since = None;
                    status
                }
                // Ray away for a moment (a dashboard restart) does not end a run.
                Err(e) if e.is_transient() => {
                    let since = *unanswered_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > UNANSWERED_FOR {
                        return Err(e);
                    }
                    tracing::warn!(run = %handle.run_id, error = %e, "asking Ray the job's state; again soon");
                    tokio::time::sleep(self.config.poll_every.max(Duration::from_secs(1))).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if ended(&status) {
                let _forget = lock(&self.submitted).remove(&h.submission_id);
                if !matches!(status, RunStatus::Gone) {
                    if let Err(e) = self.pull_logs(&h).await {
                        tracing::warn!(run = %handle.run_id, error = %e, "reading the Ray job's last output");
                    }
                }
                return Ok(status);
            } else if status == RunStatus::Running
                && logs_at.is_none_or(|at| at.elapsed() >= logs_every)
            {
                match self.pull_logs(&h).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(run = %handle.run_id, error = %e, "reading the Ray job's log")
                    }
                }
                logs_at = Some(Instant::now());
                // The log comes whole each time: a long one is read less often.
                let size = h
                    .output
                    .as_ref()
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map_or(0, |m| m.len());
                logs_every = (self.config.poll_every * (1 + (size >> 20) as u32))
                    .min(Duration::from_secs(10));
            }
            tokio::time::sleep(self.config.poll_every).await;
        }
    }

    async fn cancel(&self, handle: &Handle, grace: Duration) -> RunnerResult<()> {
        let h = RayHandle::of(handle)?;
        if self.job_now(&h).await?.is_none_or(|j| j.ended()) {
            return Ok(());
        }
        // Ray's stop is its SIGTERM, then SIGKILL after its own wait; there is no other.
        self.api(&h.address).stop(&h.submission_id).await?;
        let deadline = Instant::now() + grace + STOP_SETTLE;
        while Instant::now() < deadline {
            tokio::time::sleep(self.config.poll_every).await;
            match self.job_now(&h).await? {
                Some(j) if !j.ended() => {}
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    async fn owned(&self) -> RunnerResult<Vec<Handle>> {
        let addresses: Vec<String> = lock(&self.addresses).iter().cloned().collect();
        let mut owned = Vec::new();
        for address in addresses {
            // A cluster gone for good must not keep the agent from finding the others' jobs.
            let jobs = match self.api(&address).list().await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(%address, error = %e, "listing a Ray cluster's jobs");
                    continue;
                }
            };
            for job in jobs {
                let (Some(id), false) = (job.submission_id.clone(), job.ended()) else {
                    continue;
                };
                if job.meta("liftoff_agent") != Some(self.config.label.as_str()) {
                    continue;
                }
                let Ok(run) = id.parse() else { continue };
                owned.push(Handle {
                    runner: ResourceType::Ray,
                    run_id: run,
                    data: serde_json::json!({"address": address, "submission_id": id, "output": null}),
                });
            }
        }
        Ok(owned)
    }

    /// A live job no run claims is stopped; Ray keeps ended jobs' records as its history.
    async fn release(&self, handle: &Handle) -> RunnerResult<()> {
        let h = RayHandle::of(handle)?;
        match self.api(&h.address).get(&h.submission_id).await? {
            Some(job) if !job.ended() => self.api(&h.address).stop(&h.submission_id).await,
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_argv_becomes_a_command_line_a_shell_splits_back() {
        let argv: Vec<String> = ["python", "train.py", "--lr=0.1", "it's", "a b", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_join(&argv),
            r#"python train.py --lr=0.1 'it'\''s' 'a b' ''"#
        );
    }

    #[test]
    fn output_grows_by_what_the_file_lacks() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("output.log");
        append_new(&out, b"one\n").unwrap();
        append_new(&out, b"one\ntwo\n").unwrap();
        append_new(&out, b"one\ntwo\n").unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\ntwo\n");
    }
}

//! Runners: an agent's adapter to one backend. The agent talks to every backend through
//! [`Runner`]; each backend (a folder here: `local`, `container`, `slurm`, `ray`, `kubernetes`) maps its own
//! states onto [`RunStatus`], and [`registry`] builds the runners an agent's queues need from
//! its config sections. What the agent needs to know of a backend it asks the runner
//! ([`Runner::capabilities`]), never its name.
//!
//! Every resource a runner creates carries the run id, so that a restarted agent can find
//! what it owns ([`Runner::owned`]) and re-adopt it instead of losing or duplicating it.

pub mod container;
pub mod kubernetes;
pub mod local;
pub mod procs;
pub mod ray;
pub mod registry;
pub mod slurm;

pub use registry::{Runners, Section};

use async_trait::async_trait;
use liftoff_types::{ResourceType, RunId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A run's environment: what every run of the agent inherits (made once, shared) and the
/// run's own variables over it. Kept apart so that a runner can pass the shared part once
/// (the local runner sends it to its supervisor once per connection, not with every run:
/// a copy and a few KiB of JSON per short run).
#[derive(Clone, Debug, Default)]
pub struct RunEnv {
    pub base: Arc<BTreeMap<String, String>>,
    /// Wins over `base` where both have a name.
    pub own: BTreeMap<String, String>,
}

impl RunEnv {
    pub fn get(&self, name: &str) -> Option<&String> {
        self.own.get(name).or_else(|| self.base.get(name))
    }

    /// Every variable the run gets, once each, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.base
            .iter()
            .filter(|(name, _)| !self.own.contains_key(*name))
            .chain(self.own.iter())
    }
}

/// Everything a runner needs to start one run.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub run_id: RunId,
    /// The item this run is an attempt of, as `STORE/ITEM` (the server's store id, so that
    /// items of two servers sharing a backend never meet): a backend whose runs outlive their
    /// agent ends an earlier attempt's before it starts this one (fencing at the backend).
    pub attempt_of: Option<String>,
    /// The command, as an argv (a string entrypoint arrives as `["bash", "-c", ...]`).
    pub argv: Vec<String>,
    /// The run's whole environment (runners start from an empty one).
    pub env: RunEnv,
    /// The run's own working directory, created by the agent.
    pub workdir: PathBuf,
    /// Where stdout and stderr go, interleaved as written.
    pub output: PathBuf,
    /// The queue's resource args with the agent's macros expanded.
    pub resource_args: serde_json::Value,
    /// Start only while fewer runs than this are live on this runner, waiting in line
    /// otherwise (`launch` then returns when the run starts). `None`: start now.
    pub concurrency: Option<u32>,
    /// The container image to run, for runners that run images.
    pub image: Option<String>,
}

/// What a runner can do, as the agent needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Runs container images: image jobs, and code jobs built into an image
    /// ([`Runner::build`]).
    pub images: bool,
    /// A launched run is running at once (a local process). Otherwise it is `starting` until
    /// [`Runner::status`] says it runs (a queued Slurm job, an image being pulled).
    pub runs_at_launch: bool,
    /// The backend keeps what a run leaves after it ends until [`Runner::release`] (a
    /// stopped container), so a starting agent lists it even with an empty journal: a crash
    /// between the report and the release leaves it behind.
    pub keeps_ended: bool,
    /// The run sees none of the agent's files: only its own `box/` directory (the metrics
    /// file), and its config read-only. Its output file is the runner's to write.
    pub sandboxed: bool,
    /// Its runs stop on their own when the agent's lease lapses ([`Runner::renew_lease`]:
    /// the local supervisor), so the agent does not stop them too.
    pub keeps_lease: bool,
    /// Takes a code job's source directory as it is (the run's `workdir`) and ships it to
    /// the backend itself (Ray's `working_dir`): the agent makes no Python environment for
    /// it.
    pub ships_source: bool,
}

/// Where a run's metrics file is, in its directory (a sandboxed run's in its `box/`).
pub fn metrics_file(run_dir: &std::path::Path, sandboxed: bool) -> PathBuf {
    if sandboxed {
        run_dir.join("box").join("metrics.jsonl")
    } else {
        run_dir.join("metrics.jsonl")
    }
}

/// A code job's source to make into an image.
#[derive(Clone, Debug)]
pub struct BuildRequest {
    /// The job's name, for the image's name.
    pub job: String,
    /// The unpacked source.
    pub source: PathBuf,
}

/// Why a build failed, with its log.
#[derive(Debug)]
pub struct BuildFailure {
    pub message: String,
    pub log: String,
}

/// A built image: its reference, whether it was built now (false: found made), and the log.
#[derive(Debug)]
pub struct Built {
    pub image: String,
    pub built: bool,
    pub log: String,
}

/// How to find a run on its backend again: stored in the agent's journal and on the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    /// The runner that made it (journals written before runners were per queue hold local
    /// runs only).
    #[serde(default)]
    pub runner: ResourceType,
    pub run_id: RunId,
    /// The backend's own fields: pid and start time, a Slurm job id, a pod name...
    pub data: serde_json::Value,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit code, or for a run killed by a signal, `128 + signal` as shells report it.
    pub code: i32,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == 0 && self.signal.is_none()
    }
}

/// A run's state on its backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunStatus {
    /// Accepted but not running yet (a pending pod, a queued Slurm job); with the reason.
    Starting(Option<String>),
    Running,
    Exited(Exit),
    /// The backend took the run away to make room for another (it goes back to its queue).
    Preempted(String),
    /// The backend ended the run for a reason of its own (a time limit, a failed node).
    Failed {
        message: String,
        exit: Option<Exit>,
    },
    /// The backend could not start it (a missing image, a failed pull): the item fails with
    /// phase `build`.
    NotStarted(String),
    /// The backend has no trace of it (it ended while nobody watched, or never started).
    Gone,
}

/// A runner's failure, said so that the agent knows whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// Worth retrying: the backend is busy or unreachable.
    #[error("{0}")]
    Transient(String),
    /// Will not work as asked: a missing executable, a refused spec.
    #[error("{0}")]
    Permanent(String),
    /// Not started because the agent's lease lapsed (the local supervisor refuses runs once
    /// it has): nothing ran, so the item goes back without counting an attempt.
    #[error("{0}")]
    LeaseLapsed(String),
}

impl RunnerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, RunnerError::Transient(_))
    }
}

pub type RunnerResult<T> = Result<T, RunnerError>;

#[async_trait]
pub trait Runner: Send + Sync {
    /// The resource type this runner serves.
    fn resource(&self) -> ResourceType;

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            images: false,
            runs_at_launch: false,
            keeps_ended: false,
            sandboxed: false,
            keeps_lease: false,
            ships_source: false,
        }
    }

    /// Makes a code job's source into an image (runners that run images).
    async fn build(&self, _request: &BuildRequest) -> Result<Built, BuildFailure> {
        Err(BuildFailure {
            message: format!("the {} runner builds no images", self.resource()),
            log: String::new(),
        })
    }

    /// Refuses a spec this backend cannot run, before anything is started.
    async fn check(&self, spec: &RunSpec) -> RunnerResult<()>;

    /// Starts a run; returns as soon as the backend has it.
    async fn launch(&self, spec: &RunSpec) -> RunnerResult<Handle>;

    /// The state of many runs in one call (backends that poll must not poll per run).
    async fn status(&self, handles: &[Handle]) -> RunnerResult<Vec<RunStatus>>;

    /// How often it is worth asking [`Runner::status`] again.
    fn poll_every(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// Waits for a run to end. The default polls [`Runner::status`]; runners that hear of an
    /// end directly answer at once.
    async fn wait(&self, handle: &Handle) -> RunnerResult<RunStatus> {
        loop {
            let status = self.status(std::slice::from_ref(handle)).await?;
            match status.into_iter().next() {
                Some(RunStatus::Starting(_)) | Some(RunStatus::Running) => {}
                Some(done) => return Ok(done),
                None => return Ok(RunStatus::Gone),
            }
            tokio::time::sleep(self.poll_every()).await;
        }
    }

    /// Takes a run that is waiting in line (see [`RunSpec::concurrency`]) out of it. True if
    /// it was still waiting, so it never starts; false if it had started (or was unknown).
    async fn withdraw(&self, _run: &RunId) -> RunnerResult<bool> {
        Ok(false)
    }

    /// Stops a run: a polite signal, `grace` to finish, then a forced stop. Returns once it
    /// is gone (or the forced stop was sent).
    async fn cancel(&self, handle: &Handle, grace: Duration) -> RunnerResult<()>;

    /// The runs this runner finds on its backend, labelled as liftoff's.
    async fn owned(&self) -> RunnerResult<Vec<Handle>>;

    /// The agent's lease on its runs, renewed after each heartbeat its server answered: once
    /// `left` passes without a renewal, the server may declare the agent lost and give its
    /// items to another agent, so runs that live on without the agent must stop then
    /// (`grace` between the polite and the forced stop). The local runner hands it to its
    /// supervisor; the others need nothing (a live agent stops their runs itself when its
    /// lease lapses, and the next attempt's agent ends what a dead one left).
    async fn renew_lease(&self, _left: Duration, _grace: Duration) {}

    /// Forgets a run whose end the server has: removes what the backend keeps of it (a
    /// stopped container). Also for what [`Runner::owned`] finds that no run of the agent's
    /// claims (the reconcile pass).
    async fn release(&self, _handle: &Handle) -> RunnerResult<()> {
        Ok(())
    }
}

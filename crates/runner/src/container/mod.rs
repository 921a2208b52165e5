//! The container runner (resource `container`, W&B's `local-container`): a run is a container
//! on a Docker engine (or podman's Docker-compatible service), driven through the Engine API
//! over its unix socket with `bollard`, never by shelling out to `docker run`.
//!
//! - A run's container is named `liftoff-RUN` and labelled with the run id and the agent's
//!   label, so a restarted agent finds its containers ([`Runner::owned`]). It is created from
//!   the run's image with the run's argv as its command, the run's own environment (the token
//!   and config live only there, never in the image or a file), W&B's allow-listed resource
//!   args ([`liftoff_types::container`]), and the run's directory mounted at `/liftoff` (its
//!   config file and metrics file, as local runs have them).
//! - An image not on the engine is pulled after `launch` has returned: the run is `starting`
//!   with "pulling IMAGE" meanwhile, and a failed pull ends it as not started (phase `build`)
//!   with the engine's reason.
//! - Output: the engine's log stream of both streams is appended to the run's output file,
//!   which the agent ships like a local run's ([`logs`]). The end comes from the engine's
//!   wait; the exit code and `OOMKilled` from its inspect.
//! - Stop: the engine's stop (SIGTERM, the grace, SIGKILL). The container is kept after it
//!   ends (its exit code survives an agent crash) and removed once the agent has reported the
//!   end ([`Runner::release`]); the reconcile pass removes labelled containers no run claims.
//! - Runs wait in a line of the runner's own while the runner has as many live as it may.

mod build;
mod logs;
mod spec;

use crate::{
    BuildFailure, BuildRequest, Built, Capabilities, Exit, Handle, RunSpec, RunStatus, Runner,
    RunnerError, RunnerResult,
};
use async_trait::async_trait;
use bollard::errors::Error as EngineError;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use liftoff_types::{ResourceType, RunId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Label keys on every container the runner makes.
pub const RUN_LABEL: &str = "liftoff.run-id";
pub const AGENT_LABEL: &str = "liftoff.agent";
/// The item a container is an attempt of (`STORE/ITEM`): the next attempt's agent removes
/// the earlier attempts' containers on the same engine before it starts (an agent that died
/// left them).
pub const ITEM_LABEL: &str = "liftoff.item";

/// When to pull a run's image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// Only when the engine does not have it.
    #[default]
    Missing,
    Always,
    /// Never: a missing image fails the run.
    Never,
}

#[derive(Clone, Debug)]
pub struct ContainerConfig {
    /// `unix:///path/to/docker.sock`.
    pub host: String,
    /// The agent's label, on every container.
    pub label: String,
    pub network: Option<String>,
    pub pull: Pull,
    pub base_image: Option<String>,
    pub registry: Option<String>,
    pub max_jobs: Option<u32>,
}

/// What the container runner keeps in a [`Handle`]'s data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerHandle {
    /// The container's name.
    pub container: String,
    /// The image it runs (what a built code job became), for people reading the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The run's output file, for a restarted agent to follow the log into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<std::path::PathBuf>,
}

impl ContainerHandle {
    pub fn of(handle: &Handle) -> RunnerResult<ContainerHandle> {
        serde_json::from_value(handle.data.clone())
            .map_err(|e| RunnerError::Permanent(format!("not a container handle: {e}")))
    }
}

/// What the runner knows of a run it launched, beyond what the engine says.
enum Phase {
    /// The image is being pulled; the container does not exist yet.
    Pulling(String),
    /// The container could not be made (a failed pull, a refused create).
    NotStarted(String),
    /// The container exists.
    Created,
}

struct Live {
    phase: Mutex<Phase>,
    changed: Notify,
    /// The log follower; the end is told once it has written everything.
    logs: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The pull in the background, aborted by a stop.
    pull: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Its place in the runner's line, given back when it ends.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Live {
    fn set(&self, phase: Phase) {
        *lock(&self.phase) = phase;
        self.changed.notify_waiters();
    }
}

pub struct ContainerRunner {
    docker: Docker,
    config: ContainerConfig,
    live: Arc<Mutex<HashMap<RunId, Arc<Live>>>>,
    line: Mutex<Option<Arc<Semaphore>>>,
    /// Runs waiting in line; a withdrawal takes a run out.
    waiting: Mutex<HashSet<RunId>>,
}

impl ContainerRunner {
    /// Connects lazily: nothing is asked of the engine until the first run.
    pub fn new(config: ContainerConfig) -> Result<ContainerRunner, String> {
        let path = config.host.trim_start_matches("unix://").to_string();
        let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| format!("cannot use the engine at {}: {e}", config.host))?;
        let line = config
            .max_jobs
            .map(|n| Arc::new(Semaphore::new(n.max(1) as usize)));
        Ok(ContainerRunner {
            docker,
            config,
            live: Arc::default(),
            // Known limits make the line now, so re-adopted runs take their places in it
            // before any new run does.
            line: Mutex::new(line),
            waiting: Mutex::default(),
        })
    }

    fn handle(&self, run_id: &RunId, container: String, image: Option<String>) -> Handle {
        let data = ContainerHandle {
            container,
            image,
            output: None,
        };
        Handle {
            runner: ResourceType::Container,
            run_id: run_id.clone(),
            data: serde_json::to_value(data).unwrap_or_default(),
        }
    }

    /// Waits for a place in the line (the smaller of the agent's and the runner's limit).
    async fn enter_line(&self, spec: &RunSpec) -> RunnerResult<Option<OwnedSemaphorePermit>> {
        let limit = match (spec.concurrency, self.config.max_jobs) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        let line = lock(&self.line)
            .get_or_insert_with(|| Arc::new(Semaphore::new(limit.max(1) as usize)))
            .clone();
        lock(&self.waiting).insert(spec.run_id.clone());
        let permit = line
            .acquire_owned()
            .await
            .map_err(|e| RunnerError::Permanent(e.to_string()))?;
        if !lock(&self.waiting).remove(&spec.run_id) {
            return Err(RunnerError::Permanent("withdrawn before it started".into()));
        }
        Ok(Some(permit))
    }

    async fn has_image(&self, image: &str) -> RunnerResult<bool> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine(e)),
        }
    }

    /// Pulls an image, with the engine's reason on failure.
    async fn pull(docker: &Docker, image: &str) -> Result<(), String> {
        // Without a tag the engine pulls every tag of the repository.
        let reference = with_tag(image);
        let options = CreateImageOptions {
            from_image: Some(reference),
            ..Default::default()
        };
        let mut progress = docker.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            match step {
                Ok(info) => {
                    if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                        return Err(format!("pulling {image} failed: {detail}"));
                    }
                }
                Err(e) => return Err(format!("pulling {image} failed: {}", reason(&e))),
            }
        }
        Ok(())
    }

    /// Creates and starts the container and follows its log into the run's output file.
    async fn create_and_start(
        docker: &Docker,
        spec: &spec::Container,
        live: &Arc<Live>,
    ) -> Result<(), String> {
        fence_earlier_attempts(docker, spec).await?;
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            platform: spec.platform.clone().unwrap_or_default(),
        };
        match docker
            .create_container(Some(options), spec.body.clone())
            .await
        {
            Ok(_) => {}
            // Made by an earlier try of this same launch (its answer lost): take it, but only
            // if it is this run's, made by this agent.
            Err(e) if status(&e) == Some(409) => {
                let labels = docker
                    .inspect_container(&spec.name, None)
                    .await
                    .ok()
                    .and_then(|i| i.config)
                    .and_then(|c| c.labels)
                    .unwrap_or_default();
                let wanted = spec.body.labels.clone().unwrap_or_default();
                let ours = [RUN_LABEL, AGENT_LABEL]
                    .iter()
                    .all(|k| labels.contains_key(*k) && labels.get(*k) == wanted.get(*k));
                if !ours {
                    return Err(format!(
                        "a container named {} already exists and is not this run's",
                        spec.name
                    ));
                }
            }
            Err(e) => return Err(format!("the engine refused the container: {}", reason(&e))),
        }
        if let Err(e) = docker.start_container(&spec.name, None).await {
            if status(&e) != Some(304) {
                let _ = docker
                    .remove_container(&spec.name, Some(force_remove()))
                    .await;
                return Err(format!("the container did not start: {}", reason(&e)));
            }
        }
        let follower = tokio::spawn(logs::follow(
            docker.clone(),
            spec.name.clone(),
            spec.output.clone(),
        ));
        *lock(&live.logs) = Some(follower);
        live.set(Phase::Created);
        Ok(())
    }

    fn live(&self, run: &RunId) -> Option<Arc<Live>> {
        lock(&self.live).get(run).cloned()
    }

    /// The live run's record, made for a run this process did not launch (re-adopted), with
    /// its log follower picking up where the output file ends.
    fn adopt(&self, handle: &Handle, container: &str, output: Option<std::path::PathBuf>) {
        let mut live = lock(&self.live);
        if live.contains_key(&handle.run_id) {
            return;
        }
        let run = Arc::new(Live {
            phase: Mutex::new(Phase::Created),
            changed: Notify::new(),
            logs: Mutex::new(None),
            pull: Mutex::new(None),
            // A re-adopted run counts in the line like any other (when there is room: it
            // runs already, and must not wait).
            permit: Mutex::new(
                lock(&self.line)
                    .clone()
                    .and_then(|line| line.try_acquire_owned().ok()),
            ),
        });
        if let Some(output) = output {
            let follower = tokio::spawn(logs::follow(
                self.docker.clone(),
                container.to_string(),
                output,
            ));
            *lock(&run.logs) = Some(follower);
        }
        live.insert(handle.run_id.clone(), run);
    }

    async fn inspect(&self, container: &str) -> RunnerResult<RunStatus> {
        let info = match self.docker.inspect_container(container, None).await {
            Ok(info) => info,
            Err(e) if status(&e) == Some(404) => return Ok(RunStatus::Gone),
            // Podman names some ended states in words the engine API does not have
            // (`stopped`): such a container is past running, and the wait tells its end.
            Err(EngineError::JsonDataError { .. }) | Err(EngineError::JsonSerdeError { .. }) => {
                return Ok(RunStatus::Running)
            }
            Err(e) => return Err(engine(e)),
        };
        let state = info.state.unwrap_or_default();
        use bollard::models::ContainerStateStatusEnum as S;
        Ok(match state.status {
            Some(S::CREATED) => RunStatus::Starting(Some("the container is created".into())),
            Some(S::EXITED) | Some(S::DEAD) => {
                let code = state.exit_code.unwrap_or(-1) as i32;
                let exit = Exit { code, signal: None };
                if state.oom_killed == Some(true) {
                    RunStatus::Failed {
                        message: "OOMKilled: the container ran out of memory".into(),
                        exit: Some(exit),
                    }
                } else {
                    match state.error.filter(|e| !e.is_empty()) {
                        Some(error) if code != 0 => RunStatus::Failed {
                            message: format!("the engine: {error}"),
                            exit: Some(exit),
                        },
                        _ => RunStatus::Exited(exit),
                    }
                }
            }
            _ => RunStatus::Running,
        })
    }

    /// The output file of a run, from its container's mounts (the run's directory is mounted
    /// at `/liftoff`), for re-adoption.
    async fn output_of(&self, container: &str) -> Option<std::path::PathBuf> {
        let info = self.docker.inspect_container(container, None).await.ok()?;
        let mounts = info.mounts?;
        let run_dir = mounts
            .into_iter()
            .find(|m| m.destination.as_deref() == Some(spec::RUN_DIR))?
            .source?;
        Some(std::path::Path::new(&run_dir).with_file_name("output.log"))
    }
}

#[async_trait]
impl Runner for ContainerRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::Container
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            images: true,
            runs_at_launch: false,
            keeps_ended: true,
            sandboxed: true,
            keeps_lease: false,
            ships_source: false,
        }
    }

    async fn build(&self, request: &BuildRequest) -> Result<Built, BuildFailure> {
        build::build(&self.docker, &self.config, request).await
    }

    async fn check(&self, spec: &RunSpec) -> RunnerResult<()> {
        spec::Container::new(spec, &self.config).map(drop)
    }

    async fn launch(&self, spec: &RunSpec) -> RunnerResult<Handle> {
        let made = spec::Container::new(spec, &self.config)?;
        let permit = self.enter_line(spec).await?;
        let live = Arc::new(Live {
            phase: Mutex::new(Phase::Pulling(format!("pulling image {}", made.image))),
            changed: Notify::new(),
            logs: Mutex::new(None),
            pull: Mutex::new(None),
            permit: Mutex::new(permit),
        });
        lock(&self.live).insert(spec.run_id.clone(), live.clone());
        let mut handle = self.handle(&spec.run_id, made.name.clone(), Some(made.image.clone()));
        handle.data["output"] = serde_json::json!(made.output);
        let present = match self.has_image(&made.image).await {
            Ok(p) => p,
            Err(e) => {
                // Its place in the line goes with it.
                lock(&self.live).remove(&spec.run_id);
                return Err(e);
            }
        };
        if present && self.config.pull != Pull::Always {
            if let Err(message) = Self::create_and_start(&self.docker, &made, &live).await {
                lock(&self.live).remove(&spec.run_id);
                return Err(RunnerError::Permanent(message));
            }
            return Ok(handle);
        }
        if !present && self.config.pull == Pull::Never {
            let message = format!(
                "the image {} is not on the engine, and this runner never pulls",
                made.image
            );
            live.set(Phase::NotStarted(message));
            return Ok(handle);
        }
        let docker = self.docker.clone();
        let pulling = live.clone();
        let task = tokio::spawn(async move {
            let made_it = match Self::pull(&docker, &made.image).await {
                Ok(()) => Self::create_and_start(&docker, &made, &pulling).await,
                Err(e) => Err(e),
            };
            if let Err(message) = made_it {
                pulling.set(Phase::NotStarted(message));
            }
        });
        *lock(&live.pull) = Some(task);
        Ok(handle)
    }

    async fn status(&self, handles: &[Handle]) -> RunnerResult<Vec<RunStatus>> {
        let mut out = Vec::with_capacity(handles.len());
        for handle in handles {
            let container = ContainerHandle::of(handle)?.container;
            let known = self
                .live(&handle.run_id)
                .map(|live| match &*lock(&live.phase) {
                    Phase::Pulling(what) => Some(RunStatus::Starting(Some(what.clone()))),
                    Phase::NotStarted(why) => Some(RunStatus::NotStarted(why.clone())),
                    Phase::Created => None,
                });
            out.push(match known.flatten() {
                Some(s) => s,
                None => self.inspect(&container).await?,
            });
        }
        Ok(out)
    }

    fn poll_every(&self) -> Duration {
        Duration::from_millis(250)
    }

    async fn wait(&self, handle: &Handle) -> RunnerResult<RunStatus> {
        let container = ContainerHandle::of(handle)?.container;
        let live = match self.live(&handle.run_id) {
            Some(live) => live,
            None => {
                // Re-adopted: follow its log from where the output file ends.
                let output = match ContainerHandle::of(handle)?.output {
                    Some(path) => Some(path),
                    None => self.output_of(&container).await,
                };
                self.adopt(handle, &container, output);
                self.live(&handle.run_id)
                    .ok_or_else(|| RunnerError::Permanent("the run vanished".into()))?
            }
        };
        // Until the container exists (a pull), wait for it.
        loop {
            let changed = live.changed.notified();
            match &*lock(&live.phase) {
                Phase::Pulling(_) => {}
                Phase::NotStarted(why) => {
                    lock(&live.permit).take();
                    return Ok(RunStatus::NotStarted(why.clone()));
                }
                Phase::Created => break,
            }
            changed.await;
        }
        let code = loop {
            let mut waited = self.docker.wait_container(&container, None);
            let waited_at = std::time::Instant::now();
            match waited.next().await {
                Some(Ok(answer)) => break Some(answer.status_code),
                // The stream ended without an answer (the engine restarting): wait again
                // while the container still runs.
                None => match still_running(&self.docker, &container).await {
                    Some(false) => break None,
                    _ => {
                        if waited_at.elapsed() < Duration::from_secs(1) {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                },
                Some(Err(EngineError::DockerContainerWaitError { code, .. })) => break Some(code),
                Some(Err(e)) if status(&e) == Some(404) => break None,
                Some(Err(e)) => {
                    tracing::warn!(%container, error = %e, "waiting on the container; again in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let follower = lock(&live.logs).take();
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        lock(&live.permit).take();
        match self.inspect(&container).await {
            Ok(RunStatus::Running) | Ok(RunStatus::Starting(_)) | Err(_) => {
                // Podman names some ended states in words the engine API does not have
                // (`stopped`), which its inspect cannot be read with: the wait's code holds.
                match code {
                    Some(code) => Ok(RunStatus::Exited(Exit {
                        code: code as i32,
                        signal: None,
                    })),
                    None => self.inspect(&container).await,
                }
            }
            other => other,
        }
    }

    async fn withdraw(&self, run: &RunId) -> RunnerResult<bool> {
        Ok(lock(&self.waiting).remove(run))
    }

    async fn cancel(&self, handle: &Handle, grace: Duration) -> RunnerResult<()> {
        let container = ContainerHandle::of(handle)?.container;
        if let Some(live) = self.live(&handle.run_id) {
            let pull = lock(&live.pull).take();
            if let Some(pull) = pull {
                if !pull.is_finished() {
                    pull.abort();
                    live.set(Phase::NotStarted("stopped before it started".into()));
                    // The abort may have come after the create: nothing of it may run on.
                    let _ = self
                        .docker
                        .remove_container(&container, Some(force_remove()))
                        .await;
                    return Ok(());
                }
            }
        }
        let options = StopContainerOptions {
            t: Some(grace.as_secs_f64().ceil() as i32),
            signal: None,
        };
        match self.docker.stop_container(&container, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status(&e), Some(304) | Some(404)) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn owned(&self) -> RunnerResult<Vec<Handle>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{AGENT_LABEL}={}", self.config.label)],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(engine)?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                let run: RunId = c.labels.as_ref()?.get(RUN_LABEL)?.parse().ok()?;
                let name = c.names?.into_iter().next()?;
                Some(self.handle(&run, name.trim_start_matches('/').to_string(), c.image))
            })
            .collect())
    }

    async fn release(&self, handle: &Handle) -> RunnerResult<()> {
        let container = ContainerHandle::of(handle)?.container;
        lock(&self.live).remove(&handle.run_id);
        match self
            .docker
            .remove_container(&container, Some(force_remove()))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }
}

/// Removes (killing) the containers of the same item's earlier attempts: an agent declared
/// lost may have left its run's container going, and two attempts must not run at once.
async fn fence_earlier_attempts(docker: &Docker, spec: &spec::Container) -> Result<(), String> {
    let labels = spec.body.labels.clone().unwrap_or_default();
    let (Some(item), Some(run)) = (labels.get(ITEM_LABEL), labels.get(RUN_LABEL)) else {
        return Ok(());
    };
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{ITEM_LABEL}={item}")],
        )])),
        ..Default::default()
    };
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("cannot list earlier attempts' containers: {}", reason(&e)))?;
    for c in found {
        let theirs = c.labels.as_ref().and_then(|l| l.get(RUN_LABEL));
        let (Some(id), true) = (c.id, theirs != Some(run)) else {
            continue;
        };
        tracing::warn!(container = %id, item = %item, "removing an earlier attempt's container");
        match docker.remove_container(&id, Some(force_remove())).await {
            Ok(()) => {}
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => {
                return Err(format!(
                    "an earlier attempt's container {id} could not be removed: {}",
                    reason(&e)
                ))
            }
        }
    }
    Ok(())
}

fn force_remove() -> RemoveContainerOptions {
    RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    }
}

/// Whether a container still runs: `None` when the engine does not say (not answering).
/// A state podman names in words the API lacks (`stopped`) is past running.
async fn still_running(docker: &Docker, container: &str) -> Option<bool> {
    match docker.inspect_container(container, None).await {
        Ok(info) => Some(info.state.and_then(|s| s.running) == Some(true)),
        Err(e) if status(&e) == Some(404) => Some(false),
        Err(EngineError::JsonDataError { .. }) | Err(EngineError::JsonSerdeError { .. }) => {
            Some(false)
        }
        Err(_) => None,
    }
}

/// An image reference with a tag (`:latest` when it names none, and no digest).
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || image.contains('@') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The HTTP status of an engine's error answer.
fn status(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own words for an error.
fn reason(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// An engine error as a runner error: answers are permanent, transport errors transient.
fn engine(e: EngineError) -> RunnerError {
    match status(&e) {
        Some(code) if code < 500 => RunnerError::Permanent(reason(&e)),
        _ => RunnerError::Transient(format!("the container engine: {}", reason(&e))),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

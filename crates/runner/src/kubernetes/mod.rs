//! The Kubernetes runner (resource `kubernetes`): a run is a batch/v1 Job made from the
//! queue's manifest ([`manifest`]), with the run's environment in a Secret of its own.
//!
//! - Namespaced only: every call is on Jobs, Pods (`get`, `list`, `watch`, `pods/log`) and
//!   Secrets of the run's namespace, so a Role in one namespace is enough
//!   (`docs/kubernetes-role.yaml`).
//! - Watched, not polled ([`watch`]): status is read from the watch's view; the only calls
//!   per run are its create (Secret, Job), the fence list, the log stream and the deletes.
//! - States: `starting` with the reason while the pod is pending (`Unschedulable` with the
//!   scheduler's message, `ContainerCreating`, image pulls); a failing image pull fails the
//!   run after `image_pull_grace`; a `DisruptionTarget` condition (preemption, eviction) is
//!   `preempted`; `OOMKilled` named; the exit code from the container's terminated state;
//!   Job conditions `Complete` / `Failed` when the pod is gone.
//! - Output: the pod's log followed into the run's output file ([`logs`]).
//! - Stop and release delete the Job with `propagationPolicy: Background` (its pods go too;
//!   batch/v1's default would orphan them) and the run's Secret.
//! - Re-adoption: Jobs carry the agent's label and the run id, found again by
//!   [`Runner::owned`]; an earlier attempt's Job of the same item is deleted before a new
//!   attempt starts (fencing at the backend).

mod fence;
mod logs;
mod manifest;
mod state;
mod watch;

use state::{custom_state, job_state, pod_state};

use crate::{Capabilities, Handle, RunSpec, RunStatus, Runner, RunnerError, RunnerResult};
use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams, PropagationPolicy,
};
use kube::{Api, Client};
use liftoff_types::{ResourceType, RunId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

pub const RUN_LABEL: &str = "liftoff.run-id";
pub const AGENT_LABEL: &str = "liftoff.agent";
pub const ITEM_LABEL: &str = "liftoff.item";
/// The whole run id (a label holds at most 63 characters).
pub const RUN_ANNOTATION: &str = "liftoff.run-id";
/// The run's output file on the agent's machine, for an agent that finds the Job after a
/// crash before its journal had the run.
pub const OUTPUT_ANNOTATION: &str = "liftoff.output";

#[derive(Clone, Debug)]
pub struct KubeConfig {
    /// The agent's label value (a hex digest), on everything the runner makes.
    pub agent: String,
    /// A kubeconfig file; `None`: `KUBECONFIG`, `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The namespace for manifests that name none; `None`: the context's, then `default`.
    pub namespace_override: Option<String>,
    /// Filled once the client is made.
    pub namespace: String,
    /// How long an image pull may fail before the run fails.
    pub image_pull_grace: Duration,
    /// W&B's `ttlSecondsAfterFinished`, long enough for a restarted agent to read an end.
    pub ttl_after_finished: u64,
}

impl KubeConfig {
    pub fn new(agent: String) -> KubeConfig {
        KubeConfig {
            agent,
            kubeconfig: None,
            context: None,
            namespace_override: None,
            namespace: "default".into(),
            image_pull_grace: Duration::from_secs(30),
            ttl_after_finished: 600,
        }
    }

    #[cfg(test)]
    fn for_tests() -> KubeConfig {
        KubeConfig::new("abc".into())
    }
}

/// What the runner keeps in a [`Handle`]'s data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeHandle {
    pub namespace: String,
    /// The Job's name (its Secret is `NAME-env`).
    pub job: String,
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<PathBuf>,
    /// A custom object's `apiVersion` and `kind` (a JobSet's...); none for a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl KubeHandle {
    /// The custom kind's API resource, if the run is a custom object.
    fn custom(&self) -> Option<ApiResource> {
        Some(resource_of(
            self.api_version.as_deref()?,
            self.kind.as_deref()?,
        ))
    }
}

/// A custom kind's resource, its plural the API's convention (`JobSet` → `jobsets`,
/// `PyTorchJob` → `pytorchjobs`), without a discovery call.
fn resource_of(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()))
}

impl KubeHandle {
    fn of(handle: &Handle) -> RunnerResult<KubeHandle> {
        serde_json::from_value(handle.data.clone())
            .map_err(|e| RunnerError::Permanent(format!("not a Kubernetes handle: {e}")))
    }
}

struct Connected {
    client: Client,
    /// The namespace for manifests that name none.
    namespace: String,
}

/// What the runner tracks of a run it launched or adopted.
#[derive(Default)]
struct Live {
    /// Since when its image pull has been failing.
    pull_failing: Option<Instant>,
    logs: Option<tokio::task::JoinHandle<()>>,
    launched: Option<Instant>,
    /// The watch has told of its Job or pod.
    seen: bool,
    /// When the Job was first seen ended with no pod in the view yet.
    job_ended_alone: Option<Instant>,
}

pub struct KubeRunner {
    config: KubeConfig,
    connected: OnceCell<Connected>,
    views: Mutex<HashMap<String, Arc<watch::View>>>,
    live: Arc<Mutex<HashMap<RunId, Live>>>,
}

fn transient(what: &str, e: kube::Error) -> RunnerError {
    match &e {
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 429 && s.code != 409 => {
            RunnerError::Permanent(format!("{what}: {} ({})", s.message, s.reason))
        }
        _ => RunnerError::Transient(format!("{what}: {e}")),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl KubeRunner {
    pub fn new(config: KubeConfig) -> KubeRunner {
        KubeRunner {
            config,
            connected: OnceCell::new(),
            views: Mutex::default(),
            live: Arc::default(),
        }
    }

    async fn connect(&self) -> RunnerResult<&Connected> {
        self.connected
            .get_or_try_init(|| async {
                let options = kube::config::KubeConfigOptions {
                    context: self.config.context.clone(),
                    ..Default::default()
                };
                let config = match &self.config.kubeconfig {
                    Some(path) => {
                        let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                            RunnerError::Permanent(format!("kubeconfig {}: {e}", path.display()))
                        })?;
                        kube::Config::from_custom_kubeconfig(file, &options)
                            .await
                            .map_err(|e| {
                                RunnerError::Permanent(format!(
                                    "kubeconfig {}: {e}",
                                    path.display()
                                ))
                            })?
                    }
                    None if self.config.context.is_some() => {
                        kube::Config::from_kubeconfig(&options)
                            .await
                            .map_err(|e| RunnerError::Permanent(format!("kubeconfig: {e}")))?
                    }
                    None => kube::Config::infer().await.map_err(|e| {
                        RunnerError::Permanent(format!("no Kubernetes cluster: {e}"))
                    })?,
                };
                let namespace = self
                    .config
                    .namespace_override
                    .clone()
                    .unwrap_or_else(|| config.default_namespace.clone());
                let client = Client::try_from(config)
                    .map_err(|e| RunnerError::Permanent(format!("Kubernetes client: {e}")))?;
                Ok(Connected { client, namespace })
            })
            .await
    }

    fn selector(&self) -> String {
        format!("{AGENT_LABEL}={}", self.config.agent)
    }

    /// The namespace's view, its watches started on first use.
    fn view(&self, c: &Connected, namespace: &str) -> Arc<watch::View> {
        lock(&self.views)
            .entry(namespace.to_string())
            .or_insert_with(|| watch::start(c.client.clone(), namespace, &self.selector()))
            .clone()
    }

    /// The run's state from the namespace's view.
    fn state(&self, view: &watch::View, handle: &Handle) -> RunStatus {
        let run = handle.run_id.as_str();
        let seen = view.lock();
        let synced = seen.jobs_synced && seen.pods_synced;
        let pod = seen.pods.get(run);
        let job = seen.jobs.get(run);
        let mut live = lock(&self.live);
        let entry = live.entry(handle.run_id.clone()).or_default();
        let container = handle.data["container"].as_str().unwrap_or("launch0");
        if handle.data.get("kind").is_some_and(|k| k.is_string()) {
            return self.custom_view_state(&seen, handle, entry, synced);
        }
        if let Some(pod) = pod {
            entry.seen = true;
            let state = pod_state(pod, container, entry, self.config.image_pull_grace);
            // A pod deleted before its end was written: nothing more will come of it.
            let deleted = seen.deleted.contains(run);
            if deleted && matches!(state, RunStatus::Starting(_) | RunStatus::Running) {
                return RunStatus::Gone;
            }
            return state;
        }
        if let Some(job) = job {
            entry.seen = true;
            let state = job_state(job);
            // The two watches are apart: a Job's end may come before its pod, whose log
            // and exit code are worth a moment's wait.
            if !matches!(state, RunStatus::Starting(_)) {
                let since = *entry.job_ended_alone.get_or_insert_with(Instant::now);
                if since.elapsed() < Duration::from_secs(5) {
                    return RunStatus::Running;
                }
            }
            return state;
        }
        if entry.launched.is_none() && !synced {
            // Re-adopted, the view not filled yet: it was running when last known.
            return RunStatus::Running;
        }
        // Just made: the watch has not told of it yet.
        let fresh = !entry.seen
            && entry
                .launched
                .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
        if !synced || fresh {
            RunStatus::Starting(Some("the Job is being created".into()))
        } else {
            RunStatus::Gone
        }
    }

    /// A custom object's run: its end from the object's conditions, the rest from its pod.
    fn custom_view_state(
        &self,
        seen: &watch::Seen,
        handle: &Handle,
        entry: &mut Live,
        synced: bool,
    ) -> RunStatus {
        let run = handle.run_id.as_str();
        let container = handle.data["container"].as_str().unwrap_or("launch0");
        let pod = seen
            .pods
            .get(run)
            .map(|p| pod_state(p, container, entry, self.config.image_pull_grace));
        if let Some(object) = seen.customs.get(run) {
            entry.seen = true;
            let pod_ended = matches!(
                pod,
                Some(RunStatus::Exited(_) | RunStatus::Failed { .. } | RunStatus::Preempted(_))
            );
            let state = custom_state(object, pod);
            // The object's watch may tell its end before the pod's watch tells the pod's
            // (its exit code, its log): a moment's wait for it, as for a Job.
            if !matches!(state, RunStatus::Starting(_) | RunStatus::Running) && !pod_ended {
                let since = *entry.job_ended_alone.get_or_insert_with(Instant::now);
                if since.elapsed() < Duration::from_secs(5) {
                    return RunStatus::Running;
                }
            }
            return state;
        }
        let fresh = !entry.seen
            && entry
                .launched
                .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
        if entry.launched.is_none() && !seen.customs_synced {
            RunStatus::Running
        } else if !(synced && seen.customs_synced) || fresh {
            RunStatus::Starting(Some("the object is being created".into()))
        } else {
            RunStatus::Gone
        }
    }

    /// `Gone` by the view is checked with the API server before it is believed (a watch
    /// that lags or is failing must not lose a run).
    async fn confirmed(
        &self,
        c: &Connected,
        k: &KubeHandle,
        state: RunStatus,
    ) -> RunnerResult<RunStatus> {
        if state != RunStatus::Gone {
            return Ok(state);
        }
        if let Some(resource) = k.custom() {
            let objects: Api<DynamicObject> =
                Api::namespaced_with(c.client.clone(), &k.namespace, &resource);
            return match objects.get_opt(&k.job).await {
                Ok(None) => Ok(RunStatus::Gone),
                Ok(Some(o)) => Ok(match custom_state(&o, None) {
                    RunStatus::Starting(_) => RunStatus::Running,
                    done => done,
                }),
                Err(e) => Err(transient("reading the run's object", e)),
            };
        }
        let jobs: Api<Job> = Api::namespaced(c.client.clone(), &k.namespace);
        match jobs.get_opt(&k.job).await {
            Ok(None) => Ok(RunStatus::Gone),
            Ok(Some(job)) => Ok(match job_state(&job) {
                RunStatus::Starting(_) => RunStatus::Running,
                done => done,
            }),
            Err(e) => Err(transient("reading the run's Job", e)),
        }
    }

    /// Follows the run's pod log once its container has started.
    fn follow_logs(&self, c: &Connected, view: &Arc<watch::View>, handle: &Handle, k: &KubeHandle) {
        let Some(output) = k.output.clone() else {
            return;
        };
        let mut live = lock(&self.live);
        let entry = live.entry(handle.run_id.clone()).or_default();
        if entry.logs.is_some() {
            return;
        }
        let started = view.lock().pods.get(handle.run_id.as_str()).and_then(|p| {
            let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
            let s = statuses.iter().find(|s| s.name == k.container)?;
            let st = s.state.as_ref()?;
            (st.running.is_some() || st.terminated.is_some())
                .then(|| p.metadata.name.clone())
                .flatten()
        });
        let Some(pod) = started else { return };
        let api: Api<Pod> = Api::namespaced(c.client.clone(), &k.namespace);
        entry.logs = Some(tokio::spawn(logs::follow(
            api,
            view.clone(),
            handle.run_id.as_str().to_string(),
            pod,
            k.container.clone(),
            output,
        )));
    }

    /// Deletes the run's Job (its pods with it) and Secret; 404s are fine.
    async fn delete(&self, k: &KubeHandle, grace: Option<Duration>) -> RunnerResult<()> {
        let c = self.connect().await?;
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            grace_period_seconds: grace.map(|g| g.as_secs().min(u32::MAX as u64) as u32),
            ..Default::default()
        };
        let deleted = match k.custom() {
            Some(resource) => {
                let objects: Api<DynamicObject> =
                    Api::namespaced_with(c.client.clone(), &k.namespace, &resource);
                objects.delete(&k.job, &params).await.map(drop)
            }
            None => {
                let jobs: Api<Job> = Api::namespaced(c.client.clone(), &k.namespace);
                jobs.delete(&k.job, &params).await.map(drop)
            }
        };
        match deleted {
            Ok(()) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(transient("deleting the run's object", e)),
        }
        let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &k.namespace);
        match secrets
            .delete(&format!("{}-env", k.job), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(transient("deleting the run's Secret", e)),
        }
        Ok(())
    }

    fn handle(&self, run: &RunId, k: &KubeHandle) -> Handle {
        Handle {
            runner: ResourceType::Kubernetes,
            run_id: run.clone(),
            data: serde_json::to_value(k).unwrap_or_default(),
        }
    }
}

#[async_trait]
impl Runner for KubeRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::Kubernetes
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

    async fn check(&self, spec: &RunSpec) -> RunnerResult<()> {
        manifest::build(spec, &self.config).map(drop)
    }

    async fn launch(&self, spec: &RunSpec) -> RunnerResult<Handle> {
        let c = self.connect().await?;
        let mut config = self.config.clone();
        config.namespace = c.namespace.clone();
        let made = manifest::build(spec, &config)?;
        let view = self.view(c, &made.namespace);
        self.fence(c, &made, spec).await?;
        let post = PostParams::default();
        let secrets: Api<Secret> = Api::namespaced(c.client.clone(), &made.namespace);
        let secret: Secret = serde_json::from_value(made.secret.clone())
            .map_err(|e| RunnerError::Permanent(format!("the run's Secret: {e}")))?;
        match secrets.create(&post, &secret).await {
            Ok(_) => {}
            // Made by an earlier try of this same launch.
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(transient("creating the run's Secret", e)),
        }
        let created = match &made.custom {
            Some((api, kind)) => {
                let resource = resource_of(api, kind);
                watch::watch_custom(&view, &resource);
                let objects: Api<DynamicObject> =
                    Api::namespaced_with(c.client.clone(), &made.namespace, &resource);
                let object: DynamicObject = serde_json::from_value(made.job.clone())
                    .map_err(|e| RunnerError::Permanent(format!("resource_args: {e}")))?;
                match objects.create(&post, &object).await {
                    Ok(o) => Ok(o.metadata),
                    Err(e) => Err((e, objects.get(&made.name).await.ok().map(|o| o.metadata))),
                }
            }
            None => {
                let jobs: Api<Job> = Api::namespaced(c.client.clone(), &made.namespace);
                let job: Job = serde_json::from_value(made.job.clone()).map_err(|e| {
                    RunnerError::Permanent(format!("resource_args: not a batch/v1 Job: {e}"))
                })?;
                match jobs.create(&post, &job).await {
                    Ok(o) => Ok(o.metadata),
                    Err(e) if is_status(&e, 409) => {
                        Err((e, jobs.get(&made.name).await.ok().map(|j| j.metadata)))
                    }
                    Err(e) => Err((e, None)),
                }
            }
        };
        let owner = match created {
            Ok(meta) => meta,
            Err((e, Some(theirs))) if is_status(&e, 409) => {
                let ours = theirs
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(RUN_ANNOTATION))
                    .is_some_and(|r| r == spec.run_id.as_str());
                if !ours {
                    return Err(RunnerError::Permanent(format!(
                        "a Job named {} already exists and is not this run's",
                        made.name
                    )));
                }
                theirs
            }
            Err((e, _)) => {
                let _ = secrets
                    .delete(&format!("{}-env", made.name), &DeleteParams::default())
                    .await;
                return Err(transient("creating the run's object", e));
            }
        };
        self.own_secret(c, &made, &owner).await;
        lock(&self.live)
            .entry(spec.run_id.clone())
            .or_default()
            .launched = Some(Instant::now());
        let k = KubeHandle {
            namespace: made.namespace.clone(),
            job: made.name.clone(),
            container: made.container.clone(),
            output: Some(made.output.clone()),
            api_version: made.custom.as_ref().map(|c| c.0.clone()),
            kind: made.custom.as_ref().map(|c| c.1.clone()),
        };
        let handle = self.handle(&spec.run_id, &k);
        self.follow_logs(c, &view, &handle, &k);
        Ok(handle)
    }

    async fn status(&self, handles: &[Handle]) -> RunnerResult<Vec<RunStatus>> {
        let c = self.connect().await?;
        let mut out = Vec::with_capacity(handles.len());
        for handle in handles {
            let k = KubeHandle::of(handle)?;
            let view = self.view(c, &k.namespace);
            self.follow_logs(c, &view, handle, &k);
            let state = self.state(&view, handle);
            out.push(self.confirmed(c, &k, state).await?);
        }
        Ok(out)
    }

    fn poll_every(&self) -> Duration {
        // Reads of the watch's view, not calls to the API server.
        Duration::from_millis(250)
    }

    async fn wait(&self, handle: &Handle) -> RunnerResult<RunStatus> {
        let c = self.connect().await?;
        let k = KubeHandle::of(handle)?;
        let view = self.view(c, &k.namespace);
        let mut changed = view.changed.subscribe();
        loop {
            self.follow_logs(c, &view, handle, &k);
            let state = self.state(&view, handle);
            let state = self.confirmed(c, &k, state).await?;
            match state {
                RunStatus::Starting(_) | RunStatus::Running => {}
                done => {
                    // The end is told once the output is all written.
                    let follower = lock(&self.live)
                        .get_mut(&handle.run_id)
                        .and_then(|l| l.logs.take());
                    if let Some(mut f) = follower {
                        if tokio::time::timeout(Duration::from_secs(30), &mut f)
                            .await
                            .is_err()
                        {
                            f.abort();
                        }
                    }
                    return Ok(done);
                }
            }
            // Also on a timer: the image-pull grace passes without an event.
            let _ = tokio::time::timeout(Duration::from_secs(1), changed.changed()).await;
        }
    }

    async fn cancel(&self, handle: &Handle, grace: Duration) -> RunnerResult<()> {
        let c = self.connect().await?;
        let k = KubeHandle::of(handle)?;
        let view = self.view(c, &k.namespace);
        // The pods first, with the stop's grace: the garbage collector would give them
        // their own once the Job is gone (and a deletion can only be shortened).
        let selector = format!(
            "{RUN_LABEL}={}",
            manifest::run_label(handle.run_id.as_str())
        );
        self.delete_pods(c, &k.namespace, &selector, grace, None)
            .await?;
        self.delete(&k, Some(grace)).await?;
        // Returns once the pod is gone (or past the grace and a margin).
        let deadline = Instant::now() + grace + Duration::from_secs(15);
        let mut changed = view.changed.subscribe();
        let gone = |v: &watch::View| {
            let s = v.lock();
            let run = handle.run_id.as_str();
            !s.pods.contains_key(run) || s.deleted.contains(run)
        };
        while !gone(&view) && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_secs(1), changed.changed()).await;
        }
        Ok(())
    }

    async fn owned(&self) -> RunnerResult<Vec<Handle>> {
        let c = self.connect().await?;
        let mut namespaces: Vec<String> = lock(&self.views).keys().cloned().collect();
        if !namespaces.contains(&c.namespace) {
            namespaces.push(c.namespace.clone());
        }
        let mut out = Vec::new();
        for ns in namespaces {
            let jobs: Api<Job> = Api::namespaced(c.client.clone(), &ns);
            let found = jobs
                .list(&ListParams::default().labels(&self.selector()))
                .await
                .map_err(|e| transient("listing the agent's Jobs", e))?;
            for job in found {
                let run = job
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(RUN_ANNOTATION))
                    .and_then(|r| r.parse::<RunId>().ok());
                let (Some(run), Some(name)) = (run, job.metadata.name.clone()) else {
                    continue;
                };
                let container = job
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.spec.as_ref())
                    .and_then(|s| s.containers.first())
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| "launch0".into());
                let output = job
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(OUTPUT_ANNOTATION))
                    .map(PathBuf::from);
                let k = KubeHandle {
                    namespace: ns.clone(),
                    job: name,
                    container,
                    output,
                    api_version: None,
                    kind: None,
                };
                out.push(self.handle(&run, &k));
            }
        }
        Ok(out)
    }

    async fn release(&self, handle: &Handle) -> RunnerResult<()> {
        let k = KubeHandle::of(handle)?;
        if let Some(live) = lock(&self.live).remove(&handle.run_id) {
            if let Some(f) = live.logs {
                f.abort();
            }
        }
        if let Some(view) = lock(&self.views).get(&k.namespace) {
            let mut seen = view.lock();
            let run = handle.run_id.as_str();
            seen.pods.remove(run);
            seen.deleted.remove(run);
            seen.jobs.remove(run);
            seen.customs.remove(run);
            // Remembered long enough for its objects' last events to pass.
            seen.released
                .retain(|_, at| at.elapsed() < Duration::from_secs(600));
            seen.released.insert(run.to_string(), Instant::now());
        }
        self.delete(&k, None).await
    }
}

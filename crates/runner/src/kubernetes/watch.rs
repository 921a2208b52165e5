//! What the runner knows of its Jobs and pods, from one watch on each per namespace
//! (selected by the agent's label), never from polling: `kube`'s watcher lists once, then
//! watches from the list's resourceVersion, honours bookmarks, and lists again after a 410.
//! Runs are found by the run-id annotation on the Job and on its pod template.

use super::RUN_ANNOTATION;
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch as signal;

#[derive(Default)]
pub struct Seen {
    pub jobs: HashMap<String, Job>,
    /// The newest pod of each run (kept once deleted: its last status tells how it ended).
    pub pods: HashMap<String, Pod>,
    /// Runs whose pod was deleted.
    pub deleted: HashSet<String>,
    /// Runs released (their end reported), and when: later events of theirs are ignored.
    pub released: HashMap<String, std::time::Instant>,
    pub jobs_synced: bool,
    pub pods_synced: bool,
    /// Custom objects (JobSets, PyTorchJobs...) of runs, from a watch per kind.
    pub customs: HashMap<String, DynamicObject>,
    /// Whether the custom watches started so far have listed.
    pub customs_synced: bool,
}

/// One namespace's view.
pub struct View {
    pub seen: Mutex<Seen>,
    /// Bumped on every event.
    pub changed: signal::Sender<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The custom kinds watched, by `apiVersion/kind`.
    custom: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    client: Client,
    namespace: String,
    selector: String,
}

impl Drop for View {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self
            .custom
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            t.abort();
        }
    }
}

impl View {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn run_of<K: Resource>(object: &K) -> Option<String> {
    object
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(RUN_ANNOTATION))
        .cloned()
}

/// Starts the two watches of a namespace.
pub fn start(client: Client, namespace: &str, selector: &str) -> Arc<View> {
    let view = Arc::new_cyclic(|weak: &std::sync::Weak<View>| {
        let config = watcher::Config::default().labels(selector);
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
        let w1 = weak.clone();
        let w2 = weak.clone();
        let ns = namespace.to_string();
        let ns2 = namespace.to_string();
        let config2 = config.clone();
        let pods_task = tokio::spawn(async move {
            let mut stream = watcher::watcher(pods, config).default_backoff().boxed();
            let mut fresh = None;
            while let Some(event) = stream.next().await {
                let Some(view) = w1.upgrade() else { return };
                apply(
                    &view,
                    event,
                    &mut fresh,
                    &ns,
                    |s| &mut s.pods,
                    |s| &mut s.pods_synced,
                    newer_pod,
                    true,
                );
            }
        });
        let jobs_task = tokio::spawn(async move {
            let mut stream = watcher::watcher(jobs, config2).default_backoff().boxed();
            let mut fresh = None;
            while let Some(event) = stream.next().await {
                let Some(view) = w2.upgrade() else { return };
                apply(
                    &view,
                    event,
                    &mut fresh,
                    &ns2,
                    |s| &mut s.jobs,
                    |s| &mut s.jobs_synced,
                    |_, _| true,
                    false,
                );
            }
        });
        View {
            seen: Mutex::default(),
            changed: signal::channel(0).0,
            tasks: vec![pods_task, jobs_task],
            custom: Mutex::default(),
            client,
            namespace: namespace.to_string(),
            selector: selector.to_string(),
        }
    });
    view
}

/// Starts watching a custom kind in the view's namespace, once.
pub fn watch_custom(view: &Arc<View>, resource: &ApiResource) {
    let key = format!("{}/{}", resource.api_version, resource.kind);
    let mut custom = view.custom.lock().unwrap_or_else(|e| e.into_inner());
    if custom.contains_key(&key) {
        return;
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(view.client.clone(), &view.namespace, resource);
    let config = watcher::Config::default().labels(&view.selector);
    let weak = Arc::downgrade(view);
    let ns = view.namespace.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut fresh = None;
        while let Some(event) = stream.next().await {
            let Some(view) = weak.upgrade() else { return };
            apply(
                &view,
                event,
                &mut fresh,
                &ns,
                |s| &mut s.customs,
                |s| &mut s.customs_synced,
                |_, _| true,
                false,
            );
        }
    });
    custom.insert(key, task);
}

/// A pod replaces the one held for its run only if it is the same pod or a newer one (a
/// Job with retries makes several).
fn newer_pod(held: &Pod, new: &Pod) -> bool {
    held.metadata.name == new.metadata.name
        || held.metadata.creation_timestamp <= new.metadata.creation_timestamp
}

#[allow(clippy::too_many_arguments)]
fn apply<K: Resource + Clone>(
    view: &View,
    event: Result<Event<K>, watcher::Error>,
    fresh: &mut Option<HashSet<String>>,
    namespace: &str,
    map: impl Fn(&mut Seen) -> &mut HashMap<String, K>,
    synced: impl Fn(&mut Seen) -> &mut bool,
    replaces: impl Fn(&K, &K) -> bool,
    keep_deleted: bool,
) {
    let mut seen = view.lock();
    match event {
        Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => {
            if let Some(run) = run_of(&o) {
                if let Some(f) = fresh.as_mut() {
                    f.insert(run.clone());
                }
                if seen.released.contains_key(&run) {
                    // Its end is reported and its objects are going: nothing to keep.
                    return;
                }
                if keep_deleted {
                    seen.deleted.remove(&run);
                }
                let m = map(&mut seen);
                if m.get(&run).is_none_or(|held| replaces(held, &o)) {
                    m.insert(run, o);
                }
            }
        }
        Ok(Event::Delete(o)) => {
            if let Some(run) = run_of(&o) {
                if seen.released.contains_key(&run) {
                    return;
                }
                let held = map(&mut seen)
                    .get(&run)
                    .is_some_and(|h| h.meta().name == o.meta().name);
                if held && keep_deleted {
                    map(&mut seen).insert(run.clone(), o);
                    seen.deleted.insert(run);
                } else if held {
                    map(&mut seen).remove(&run);
                }
            }
        }
        Ok(Event::Init) => *fresh = Some(HashSet::new()),
        Ok(Event::InitDone) => {
            let listed = fresh.take().unwrap_or_default();
            map(&mut seen).retain(|run, _| listed.contains(run));
            *synced(&mut seen) = true;
        }
        Err(e) => {
            tracing::warn!(%namespace, error = %e, "watching the runner's Kubernetes objects");
            return;
        }
    }
    drop(seen);
    view.changed.send_modify(|n| *n += 1);
}

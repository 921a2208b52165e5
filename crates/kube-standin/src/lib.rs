//! A stand-in Kubernetes API server, for tests: no real kube-apiserver can run on our
//! machines, so liftoff's Kubernetes runner is tested against this one, which speaks the
//! real API's paths and JSON for what the runner and everyday clients use (Jobs, Pods,
//! Secrets; create with `generateName`, get, list and watch by label, bookmarks, 410 Gone
//! for a compacted version, `pods/{name}/log` with `follow`, delete with a propagation
//! policy) and runs each pod's container on a real Docker engine, so images, exit codes,
//! logs and OOM kills are real.
//!
//! - [`store`]: the objects and their numbered changes.
//! - [`api`]: the HTTP routes (discovery in `discovery.rs`).
//! - [`node`]: the Job controller, a scheduler with a fixed node capacity, and a kubelet
//!   that runs containers on the engine.
//!
//! Its faithfulness is checked with clients no one here wrote (kubectl, the Python client):
//! `crates/cli/tests/kubernetes.rs`.

pub mod api;
mod discovery;
pub mod node;
mod patch;
pub mod store;
mod validate;

use bollard::Docker;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// How the stand-in behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// A bearer token every request must carry (`None`: no auth).
    pub token: Option<String>,
    /// The one node's allocatable CPU in millicores and memory in bytes: pods whose requests
    /// do not fit stay `Pending` with `Unschedulable`.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// How long a watch stays quiet before a bookmark.
    pub bookmark_every: Duration,
    /// How many changes are kept for watches to resume from.
    pub keep_changes: usize,
    /// The engine's socket.
    pub docker_host: String,
    /// The network pods' containers join.
    pub network: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            token: None,
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            bookmark_every: Duration::from_secs(5),
            keep_changes: 10_000,
            docker_host: std::env::var("DOCKER_HOST")
                .unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
            network: "bridge".into(),
        }
    }
}

/// What the node knows of one pod it runs.
#[derive(Default)]
pub(crate) struct Kubelet {
    /// The engine's container, once made.
    pub container: Option<String>,
    /// The pod went away before its container was made.
    pub gone: bool,
    /// Its container is being stopped (a delete or a preemption).
    pub stopping: bool,
}

pub struct Shared {
    store: Mutex<store::Store>,
    pub config: Config,
    requests: Mutex<BTreeMap<String, u64>>,
    pub(crate) docker: Docker,
    /// Wakes the node loop.
    pub(crate) node: Notify,
    pub(crate) kubelets: Mutex<HashMap<(String, String), Kubelet>>,
    /// The label value on this stand-in's containers, for its shutdown to remove them.
    pub(crate) instance: String,
    /// Bumped to end every open watch (as an API server restart would).
    pub(crate) watches: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, store::Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_requests(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_kubelets(&self) -> MutexGuard<'_, HashMap<(String, String), Kubelet>> {
        self.kubelets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The requests served so far, by `VERB RESOURCE`.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.lock_requests().clone()
    }

    fn preempted(self: &Arc<Self>, ns: &str, name: &str) {
        node::stop_container(self.clone(), ns, name, 1, false);
    }
}

/// A running stand-in.
pub struct Standin {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    node: tokio::task::JoinHandle<()>,
}

impl Standin {
    /// Serves on `addr` (port 0: any free one) and starts the node.
    pub async fn start(addr: SocketAddr, config: Config) -> std::io::Result<Standin> {
        let path = config.docker_host.trim_start_matches("unix://").to_string();
        let docker = Docker::connect_with_unix(&path, 120, bollard::API_DEFAULT_VERSION)
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new(config.keep_changes)),
            config,
            requests: Mutex::default(),
            docker,
            node: Notify::new(),
            kubelets: Mutex::default(),
            instance: format!("{}-{}", std::process::id(), api::suffix()),
            watches: tokio::sync::watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = api::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let node = tokio::spawn(node::run(shared.clone()));
        Ok(Standin {
            addr,
            shared,
            server,
            node,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig naming this stand-in (and its token), for clients.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        let user = match &self.shared.config.token {
            Some(t) => format!("{{\"token\": \"{t}\"}}"),
            None => "{}".into(),
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster: {{server: \"{}\"}}\n\
             users:\n- name: standin\n  user: {user}\ncontexts:\n- name: standin\n  context: {{cluster: standin, user: standin, namespace: {namespace}}}\n\
             current-context: standin\n",
            self.url()
        )
    }

    /// Ends every open watch and forgets the changes they could resume from, as an API
    /// server restarted after etcd compacted: a client that resumes from its last version
    /// gets 410 Gone and must list again.
    pub fn end_watches_and_compact(&self) {
        self.shared.lock().compact(0);
        self.shared.watches.send_modify(|n| *n += 1);
    }

    /// Stops serving and removes every container this stand-in made.
    pub async fn stop(self) {
        self.server.abort();
        self.node.abort();
        node::remove_all(&self.shared).await;
    }
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(crate) fn uid() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

//! The liftoff server: the HTTP API over a [`Store`], the dashboard, long-poll wake-ups, the
//! lease reaper, and token auth.
//!
//! `start` binds, spawns the server and its reaper, and returns a [`Server`] handle that
//! knows its address (port 0 works) and stops both on `stop`. Only the server touches the
//! store.

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod pending;
pub mod prune;
pub mod reaper;
pub mod state;
pub mod wake;
pub mod web;

use liftoff_store::Store;
use state::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The store's id among its secrets (not a secret: it names the store to agents).
const STORE_ID: &str = "store_id";

/// How long a lost agent's started items wait, by default.
pub const DEFAULT_LOST_GRACE: Duration = Duration::from_secs(10);

/// How the server runs. Built in code by tests and by the CLI from its flags.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Require bearer tokens. Turning it off is refused unless `bind` is a loopback address.
    pub auth: bool,
    pub body_limit: usize,
    pub reaper_every: Duration,
    /// An agent not heard from for this long is `lost`, and its work is handed back.
    pub agent_timeout: Duration,
    /// How long a lost agent's started items wait before they are given out again (its
    /// machine stops them meanwhile).
    pub lost_grace: Duration,
    /// Where uploaded code archives are kept (content-addressed); `None`: the server takes
    /// no uploads.
    pub artifacts: Option<std::path::PathBuf>,
    /// Largest archive one upload may carry.
    pub artifact_limit: usize,
    /// Ended items, their runs and logs, stopped agents and unreferenced archives older
    /// than this are pruned every hour; `None`: kept for good.
    pub retention: Option<Duration>,
}

impl ServerConfig {
    /// Loopback, auth on, 8 MiB bodies (a failure may carry up to 16 files of 1 MiB, but
    /// nothing legitimate needs more than this at once), the reaper every second.
    pub fn local(bind: SocketAddr) -> ServerConfig {
        ServerConfig {
            bind,
            auth: true,
            body_limit: 8 * 1024 * 1024,
            reaper_every: Duration::from_secs(1),
            agent_timeout: Duration::from_secs(30),
            lost_grace: DEFAULT_LOST_GRACE,
            artifacts: None,
            artifact_limit: 256 * 1024 * 1024,
            retention: None,
        }
    }

    /// Refuses what must not run: no auth on an address others can reach.
    pub fn check(&self) -> Result<(), StartError> {
        if !self.auth && !self.bind.ip().is_loopback() {
            return Err(StartError::AuthRequired(self.bind));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {0} without auth: only loopback addresses may run without tokens"
    )]
    AuthRequired(SocketAddr),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the run token key or the store id from the store")]
    RunKey(#[source] liftoff_store::StoreError),
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    router: axum::Router,
    stop: oneshot::Sender<()>,
    serve: JoinHandle<std::io::Result<()>>,
    reaper: JoinHandle<()>,
    relays: Vec<JoinHandle<()>>,
}

/// Binds and starts serving.
pub async fn start(config: ServerConfig, store: Arc<dyn Store>) -> Result<Server, StartError> {
    config.check()?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.bind,
        source,
    })?;
    // Every server of a store signs run tokens with the same key: the first one makes it.
    let fresh = hex::encode(rand::random::<[u8; 32]>());
    let run_key = store
        .secret(auth::RUN_KEY, &fresh)
        .await
        .map_err(StartError::RunKey)?;
    let store_id = store
        .secret(STORE_ID, &hex::encode(rand::random::<[u8; 6]>()))
        .await
        .map_err(StartError::RunKey)?;
    let state = AppState {
        store,
        agent_timeout: config.agent_timeout,
        lost_grace: config.lost_grace,
        store_id,
        started: std::time::Instant::now(),
        wakers: Arc::default(),
        auth: Arc::new(auth::Auth::new(config.auth, &run_key)),
        artifacts: config.artifacts.as_deref().map(|dir| {
            Arc::new(liftoff_artifacts::LocalStore::new(dir))
                as Arc<dyn liftoff_artifacts::ArtifactStore>
        }),
        artifact_limit: config.artifact_limit,
        metrics: Arc::default(),
    };
    if let Some(commits) = state.store.commit_times() {
        let histogram = state.metrics.store_commit.clone();
        commits.report_to(Box::new(move |took| histogram.observe(took.as_secs_f64())));
    }
    let reaper = tokio::spawn(reaper::run(state.clone(), config.reaper_every));
    let mut relays = wake_relays(&state);
    if let Some(keep) = config.retention {
        relays.push(tokio::spawn(prune::every_hour(state.clone(), keep)));
    }
    let app = api::router(state.clone(), config.body_limit, config.artifact_limit);
    let router = app.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    // Responses must leave at once: with Nagle's algorithm on, a small response written in
    // two pieces waits for the client's delayed ACK, adding milliseconds to every request.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serve = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    tracing::info!(%addr, auth = config.auth, "liftoff server listening");
    Ok(Server {
        addr,
        router,
        state,
        stop,
        serve,
        reaper,
        relays,
    })
}

/// With a store shared by several servers: one task publishes this server's wakes (in
/// batches: every key queued while the last batch was sent goes in the next), one hands
/// other servers' wakes to local waiters.
fn wake_relays(state: &AppState) -> Vec<JoinHandle<()>> {
    let Some(mut heard) = state.store.subscribe() else {
        return Vec::new();
    };
    let wakers = state.wakers.clone();
    let listen = tokio::spawn(async move {
        while let Some(key) = heard.recv().await {
            wakers.wake_local(&key);
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    state.wakers.publish_to(tx);
    let store = state.store.clone();
    let publish = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut keys = vec![first];
            while keys.len() < 256 {
                match rx.try_recv() {
                    Ok(key) if !keys.contains(&key) => keys.push(key),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if let Err(e) = store.publish(keys).await {
                tracing::warn!(error = %e, "cannot publish wake-ups to other servers");
            }
        }
    });
    vec![listen, publish]
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API's router, to answer requests in this process (the in-process client of
    /// `liftoff up`'s agent): the same routes, limits and auth as the socket.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Stops accepting, lets in-flight requests finish for up to 2 s (then cuts off what is
    /// left, such as long-polls), and stops the reaper.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.reaper.abort();
        for relay in &self.relays {
            relay.abort();
        }
        // Long-polls would hold a graceful shutdown for up to a minute; agents retry, so cut
        // them off after a moment.
        let mut serve = self.serve;
        match tokio::time::timeout(Duration::from_secs(2), &mut serve).await {
            Err(_) => serve.abort(),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Ok(Ok(Ok(()))) => {}
        }
        if let Err(e) = self.state.store.close().await {
            tracing::warn!(error = %e, "closing the store");
        }
    }
}

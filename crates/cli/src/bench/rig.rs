//! An in-process server (SQLite, on a loopback port) and one agent holding a given runner:
//! the liftoff side of the benchmarks that time N items through liftoff against a bare use
//! of the same backend (`bench slurm`, `bench ray`).

use liftoff_agent::{Agent, AgentConfig, Control};
use liftoff_client::Client;
use liftoff_runner::Runner;
use liftoff_server::{Server, ServerConfig};
use liftoff_store::{NewItem, SqliteStore, Store};
use liftoff_types::{now_ms, LaunchSpec, NewQueue, Priority, ResourceType, Scope};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Rig {
    pub store: Arc<SqliteStore>,
    server: Server,
    queue: String,
    stop: tokio::sync::mpsc::Sender<Control>,
    agent: tokio::task::JoinHandle<()>,
}

impl Rig {
    /// A store in `dir` with one queue of `resource`, a server, and an agent (no run limit)
    /// serving the queue with `runner`, made by `runner_in` from the agent's state directory.
    pub async fn start(
        dir: &Path,
        queue: &str,
        resource: ResourceType,
        runner_in: impl FnOnce(&AgentConfig) -> Arc<dyn Runner>,
    ) -> anyhow::Result<Rig> {
        std::fs::create_dir_all(dir)?;
        let store = Arc::new(SqliteStore::open(&dir.join("liftoff.db"))?);
        let mut new = NewQueue::named(queue);
        new.resource = resource;
        store.create_queue(new, now_ms()).await?;
        let (token, hash) = liftoff_server::auth::new_token();
        store
            .create_token("bench agent", Scope::Agent, &hash, now_ms())
            .await?;
        let server =
            liftoff_server::start(ServerConfig::local("127.0.0.1:0".parse()?), store.clone())
                .await?;
        let config = AgentConfig {
            queues: vec![queue.into()],
            max_jobs: -1,
            state_dir: dir.join("agent"),
            ..AgentConfig::default()
        };
        std::fs::create_dir_all(&config.state_dir)?;
        let runner = runner_in(&config);
        let client = Client::new(&server.url(), Some(token))?;
        let runners = liftoff_runner::Runners::of(vec![runner]);
        let agent = Agent::start(client, config, runners, std::env::vars()).await?;
        let (stop, rx) = tokio::sync::mpsc::channel(2);
        let agent = tokio::spawn(agent.run(rx));
        Ok(Rig {
            store,
            server,
            queue: queue.into(),
            stop,
            agent,
        })
    }

    /// Enqueues `n` items of `spec` straight into the store, waking the agent's long-poll
    /// as the API would.
    pub async fn enqueue(
        &self,
        n: usize,
        spec: &LaunchSpec,
        resource_args: &serde_json::Value,
    ) -> anyhow::Result<()> {
        for _ in 0..n {
            let item = NewItem {
                queue: self.queue.clone(),
                spec: spec.clone(),
                priority: Priority::Medium,
                resource_args: resource_args.clone(),
                kind: liftoff_types::ItemKind::Run,
            };
            let item = self.store.enqueue(item, now_ms()).await?;
            self.server
                .state
                .wakers
                .wake_one(&liftoff_server::wake::queue_key(&self.queue), item.kind);
        }
        Ok(())
    }

    /// Waits until `n` items have ended, all `finished` (else the failures' messages).
    pub async fn wait_finished(&self, n: usize, started: Instant) -> anyhow::Result<()> {
        loop {
            let d = self
                .store
                .get_queue(&self.queue, true)
                .await?
                .depth
                .unwrap_or_default();
            if d.finished + d.failed + d.stopped + d.cancelled == n as u64 {
                if d.finished == n as u64 {
                    return Ok(());
                }
                let filter = liftoff_types::api::ItemFilter {
                    state: Some(liftoff_types::ItemState::Failed),
                    ..Default::default()
                };
                let why: Vec<String> = self
                    .store
                    .list_items(&filter)
                    .await?
                    .into_iter()
                    .filter_map(|i| i.failure.map(|f| f.message))
                    .collect();
                anyhow::bail!("not every run finished: {d:?}: {why:?}");
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(600),
                "runs never ended"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(Control::StopNow).await;
        let _ = self.agent.await;
        self.server.stop().await;
    }
}

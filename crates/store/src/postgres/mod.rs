//! The PostgreSQL store, for several server replicas sharing one database.
//!
//! Every method runs in one transaction on a pooled connection (READ COMMITTED). The rules
//! are the SQLite store's; what changes is how concurrent writers are kept apart, since here
//! they are not serialized by a single writer: leasing skips rows another transaction holds
//! (`FOR UPDATE SKIP LOCKED`), every other item write locks the item's row first, and the
//! reaper and liveness passes lock or re-check what they change, so replicas running them at
//! once never hand the same thing back twice. A deadlock or serialization failure is retried
//! a few times before it reaches the caller as [`StoreError::Busy`].
//!
//! Long-poll wake-ups cross replicas by `LISTEN/NOTIFY` (see [`notify`]).

pub mod admin;
mod agents;
mod items;
mod jobs;
mod lease;
mod logs;
mod metrics;
mod notify;
mod prune;
mod queues;
mod rows;
mod runs;
mod schema;
mod sweeps;
mod tokens;

use crate::{
    Ack, Expired, LeaseParams, LogAppend, LogChunk, LostAgents, NewItem, NewSweep, NewSweepRun,
    Store, StoreError, StoreResult,
};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use liftoff_types::api::{FailRequest, ItemFilter, RunFilter};
use liftoff_types::{
    Agent, AgentId, Heartbeat, HeartbeatReply, Item, ItemId, JobSpec, JobVersion, Lease, Millis,
    NewAgent, NewQueue, Queue, Run, RunId, RunState, RunUpdate, Scope, Sweep, SweepState,
    TokenInfo,
};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;

pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Connections one server keeps to the database for everything but the hot path.
const POOL_SIZE: usize = 20;
/// Connections for the hot path (one-queue leases, acks, plain ends), whose statements are
/// planned once per connection (see [`PostgresStore::hot`]).
const HOT_POOL_SIZE: usize = 12;
/// How long making a connection may take, unless the URL says (`connect_timeout=`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Times a transaction is tried again after a deadlock or serialization failure.
const RETRIES: u32 = 5;

/// The PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: Pool,
    /// The hot path's connections, with `plan_cache_mode = force_generic_plan`. Its few
    /// statements find their rows by key whatever the parameters, and PostgreSQL's default
    /// planned them again on every call: with generic plans a durable server on two cores
    /// went from 870 to 1,660 lease → ack → finish cycles/s at 8 clients. Listings keep the
    /// default (their optional filters want plans made for the values given).
    hot: Pool,
    config: tokio_postgres::Config,
    /// This process's name on the notification channel, so it ignores its own wake-ups.
    replica: String,
    /// Lease calls per agent, for the round-robin start (per replica, like SQLite's).
    turns: Mutex<HashMap<AgentId, u64>>,
    commits: crate::CommitTimes,
}

/// Runs `$body` (which uses the transaction `$tx`) in a transaction, commits, and retries the
/// whole of it when the database reports a deadlock or a serialization failure.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            let mut client = $store.pool.get().await?;
            let started = std::time::Instant::now();
            let $tx = client.transaction().await?;
            let result = async { $body }.await;
            let result = match result {
                Ok(value) => $tx.commit().await.map(|()| value).map_err(StoreError::from),
                Err(e) => Err(e),
            };
            if result.is_ok() {
                $store.commits.observe(started.elapsed());
            }
            match result {
                Err(StoreError::Busy(reason)) if attempt < RETRIES => {
                    attempt += 1;
                    tracing::debug!(%reason, attempt, "retrying a transaction");
                }
                other => break other,
            }
        }
    }};
}

/// Runs `$body` (a one-statement fast path using the pooled connection `$client`) and gives
/// `Some` of what it changed. `None` (nothing changed, or a deadlock or serialization
/// failure) sends the caller to its transactional path, which says why or retries.
macro_rules! at_once {
    ($store:expr, |$client:ident| $body:expr) => {{
        let $client = $store.hot.get().await?;
        let started = std::time::Instant::now();
        match $body.await {
            Ok(Some(value)) => {
                $store.commits.observe(started.elapsed());
                Some(value)
            }
            Ok(None) | Err(StoreError::Busy(_)) => None,
            Err(e) => return Err(e),
        }
    }};
}

fn pool_of(config: tokio_postgres::Config, size: usize) -> StoreResult<Pool> {
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Backend(Box::new(e)))
}

impl PostgresStore {
    /// Connects (the URL is libpq's: `postgres://user:password@host:port/db`) and applies
    /// pending migrations.
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::invalid("database", e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            // A database that does not answer (a host gone, packets dropped) fails the
            // request in seconds instead of holding it and its pool slot for good.
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let pool = pool_of(config.clone(), POOL_SIZE)?;
        let mut hot_config = config.clone();
        let options = match config.get_options() {
            Some(given) => format!("{given} -c plan_cache_mode=force_generic_plan"),
            None => "-c plan_cache_mode=force_generic_plan".to_string(),
        };
        hot_config.options(&options);
        let hot = pool_of(hot_config, HOT_POOL_SIZE)?;
        let mut client = pool.get().await?;
        schema::migrate(&mut client).await?;
        drop(client);
        Ok(PostgresStore {
            pool,
            hot,
            config,
            replica: format!("{:016x}", rand::random::<u64>()),
            turns: Mutex::new(HashMap::new()),
            commits: crate::CommitTimes::default(),
        })
    }

    fn next_turn(&self, agent: AgentId) -> u64 {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        let turn = turns.entry(agent).or_insert(0);
        *turn += 1;
        *turn - 1
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_queue(&self, queue: NewQueue, now: Millis) -> StoreResult<Queue> {
        in_tx!(self, |tx| queues::create(&tx, &queue, now).await)
    }

    async fn list_queues(&self) -> StoreResult<Vec<Queue>> {
        in_tx!(self, |tx| queues::list(&tx).await)
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.pool.get().await?;
        client.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn get_queue(&self, name: &str, depth: bool) -> StoreResult<Queue> {
        in_tx!(self, |tx| queues::get_queue(&tx, name, depth).await)
    }

    async fn delete_queue(&self, name: &str, force: bool, _now: Millis) -> StoreResult<()> {
        in_tx!(self, |tx| queues::delete(&tx, name, force).await)
    }

    async fn enqueue(&self, item: NewItem, now: Millis) -> StoreResult<Item> {
        in_tx!(self, |tx| items::enqueue(&tx, &item, None, now).await)
    }

    async fn get_item(&self, id: ItemId) -> StoreResult<Item> {
        in_tx!(self, |tx| items::get_item(&tx, id).await)
    }

    async fn list_items(&self, filter: &ItemFilter) -> StoreResult<Vec<Item>> {
        in_tx!(self, |tx| items::list(&tx, filter).await)
    }

    async fn item_file(&self, id: ItemId, name: &str) -> StoreResult<String> {
        in_tx!(self, |tx| items::file(&tx, id, name).await)
    }

    async fn cancel(&self, id: ItemId, now: Millis) -> StoreResult<Item> {
        in_tx!(self, |tx| lease::cancel(&tx, id, now).await)
    }

    async fn force_cancel(&self, id: ItemId, reason: &str, now: Millis) -> StoreResult<Item> {
        in_tx!(self, |tx| lease::force_cancel(&tx, id, reason, now).await)
    }

    async fn lease(&self, params: LeaseParams, now: Millis) -> StoreResult<Vec<Lease>> {
        if params.queues.len() == 1 {
            let leases = {
                let client = self.hot.get().await?;
                lease::lease_one_queue(&client, &params, now).await?
            };
            if let Some(leases) = leases {
                return Ok(leases);
            }
        }
        let turn = self.next_turn(params.agent);
        in_tx!(self, |tx| lease::lease(&tx, &params, turn, now).await)
    }

    async fn ack(&self, id: ItemId, ack: Ack, now: Millis) -> StoreResult<Run> {
        if !ack.state.is_terminal() {
            if let Some(run) = at_once!(self, |c| lease::ack_at_once(&c, id, &ack, now)) {
                return Ok(run);
            }
        }
        in_tx!(self, |tx| lease::ack(&tx, id, &ack, now).await)
    }

    async fn fail(&self, id: ItemId, report: FailRequest, now: Millis) -> StoreResult<Item> {
        in_tx!(self, |tx| lease::fail(&tx, id, &report, now).await)
    }

    async fn warn(&self, id: ItemId, fence: i64, message: &str, now: Millis) -> StoreResult<()> {
        in_tx!(self, |tx| lease::warn(&tx, id, fence, message, now).await)
    }

    async fn release(&self, id: ItemId, fence: i64, now: Millis) -> StoreResult<()> {
        in_tx!(self, |tx| lease::release(&tx, id, fence, now).await)
    }

    async fn expire_leases(&self, now: Millis) -> StoreResult<Expired> {
        in_tx!(self, |tx| lease::expire(&tx, now).await)
    }

    async fn update_run(&self, id: &RunId, update: RunUpdate, now: Millis) -> StoreResult<Run> {
        // Only a plain end has a fast path: other reports take no connection for it.
        if matches!(update.state, RunState::Finished | RunState::Stopped) {
            if let Some(run) = at_once!(self, |c| runs::end_at_once(&c, id, &update, now)) {
                return Ok(run);
            }
        }
        in_tx!(self, |tx| runs::update(&tx, id, &update, now).await)
    }

    async fn get_run(&self, id: &RunId) -> StoreResult<Run> {
        in_tx!(self, |tx| rows::load_run(&tx, id).await)
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        in_tx!(self, |tx| runs::list(&tx, filter).await)
    }

    async fn request_stop(
        &self,
        id: &RunId,
        reason: Option<String>,
        now: Millis,
    ) -> StoreResult<Run> {
        in_tx!(self, |tx| runs::request_stop(
            &tx,
            id,
            reason.as_deref(),
            now
        )
        .await)
    }

    async fn append_metrics(
        &self,
        id: &RunId,
        first_line: Option<u64>,
        records: Vec<Map<String, Value>>,
        now: Millis,
    ) -> StoreResult<u64> {
        in_tx!(self, |tx| metrics::append(
            &tx, id, first_line, &records, now
        )
        .await)
    }

    async fn read_metrics(&self, id: &RunId) -> StoreResult<Vec<Map<String, Value>>> {
        in_tx!(self, |tx| metrics::read(&tx, id).await)
    }

    async fn put_job_version(
        &self,
        name: &str,
        key: &str,
        spec: JobSpec,
        now: Millis,
    ) -> StoreResult<(JobVersion, bool)> {
        in_tx!(self, |tx| jobs::put(&tx, name, key, &spec, now).await)
    }

    async fn get_job_version(&self, name: &str, version: Option<u32>) -> StoreResult<JobVersion> {
        in_tx!(self, |tx| jobs::get_version(&tx, name, version).await)
    }

    async fn list_job_versions(&self, name: Option<&str>) -> StoreResult<Vec<JobVersion>> {
        in_tx!(self, |tx| jobs::list(&tx, name).await)
    }

    async fn create_sweep(
        &self,
        sweep: NewSweep,
        scheduler: NewItem,
        now: Millis,
    ) -> StoreResult<Sweep> {
        in_tx!(self, |tx| sweeps::create(&tx, &sweep, &scheduler, now)
            .await)
    }

    async fn get_sweep(&self, id: &str) -> StoreResult<Sweep> {
        in_tx!(self, |tx| sweeps::get_sweep(&tx, id, false).await)
    }

    async fn list_sweeps(&self) -> StoreResult<Vec<Sweep>> {
        in_tx!(self, |tx| sweeps::list(&tx).await)
    }

    async fn set_sweep_state(
        &self,
        id: &str,
        to: SweepState,
        message: Option<String>,
        now: Millis,
    ) -> StoreResult<(Sweep, Vec<Item>)> {
        in_tx!(self, |tx| sweeps::set_state(
            &tx,
            id,
            to,
            message.as_deref(),
            now
        )
        .await)
    }

    async fn enqueue_sweep_run(&self, run: NewSweepRun, now: Millis) -> StoreResult<Item> {
        in_tx!(self, |tx| sweeps::enqueue_run(&tx, &run, now).await)
    }

    async fn append_log(
        &self,
        id: &RunId,
        at: LogAppend,
        data: Vec<u8>,
        _now: Millis,
    ) -> StoreResult<u64> {
        in_tx!(self, |tx| logs::append(&tx, id, &at, &data).await)
    }

    async fn read_log(&self, id: &RunId, offset: u64, max: usize) -> StoreResult<LogChunk> {
        in_tx!(self, |tx| logs::read(&tx, id, offset, max).await)
    }

    async fn pending_front(&self, queue: &str, limit: u32) -> StoreResult<Vec<Item>> {
        in_tx!(self, |tx| items::pending_front(&tx, queue, limit).await)
    }

    async fn item_counts(&self) -> StoreResult<crate::ItemCounts> {
        in_tx!(self, |tx| queues::item_counts(&tx).await)
    }

    fn commit_times(&self) -> Option<&crate::CommitTimes> {
        Some(&self.commits)
    }

    async fn log_len(&self, id: &RunId) -> StoreResult<u64> {
        in_tx!(self, |tx| logs::len(&tx, id).await)
    }

    async fn register_agent(&self, agent: NewAgent, now: Millis) -> StoreResult<Agent> {
        in_tx!(self, |tx| agents::register(&tx, &agent, now).await)
    }

    async fn heartbeat(
        &self,
        id: AgentId,
        beat: Heartbeat,
        now: Millis,
    ) -> StoreResult<HeartbeatReply> {
        in_tx!(self, |tx| agents::heartbeat(&tx, id, &beat, now).await)
    }

    async fn touch_agent(&self, id: AgentId, now: Millis) -> StoreResult<()> {
        in_tx!(self, |tx| agents::touch(&tx, id, now).await)
    }

    async fn get_agent(&self, id: AgentId) -> StoreResult<Agent> {
        in_tx!(self, |tx| agents::get_agent(&tx, id).await)
    }

    async fn list_agents(&self) -> StoreResult<Vec<Agent>> {
        in_tx!(self, |tx| agents::list(&tx).await)
    }

    async fn request_agent_stop(&self, id: AgentId, _now: Millis) -> StoreResult<Agent> {
        in_tx!(self, |tx| agents::request_stop(&tx, id).await)
    }

    async fn lose_agents(
        &self,
        cutoff: Millis,
        now: Millis,
        hold_until: Millis,
    ) -> StoreResult<LostAgents> {
        in_tx!(self, |tx| agents::lose(&tx, cutoff, now, hold_until).await)
    }

    async fn prune(&self, cutoff: Millis, dry_run: bool) -> StoreResult<crate::Pruned> {
        in_tx!(self, |tx| prune::prune(&tx, cutoff, dry_run).await)
    }

    async fn create_token(
        &self,
        name: &str,
        scope: Scope,
        hash: &str,
        now: Millis,
    ) -> StoreResult<TokenInfo> {
        in_tx!(self, |tx| tokens::create(&tx, name, scope, hash, now).await)
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenInfo>> {
        in_tx!(self, |tx| tokens::by_hash(&tx, hash).await)
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenInfo>> {
        in_tx!(self, |tx| tokens::list(&tx).await)
    }

    async fn delete_token(&self, id: i64) -> StoreResult<()> {
        in_tx!(self, |tx| tokens::delete(&tx, id).await)
    }

    async fn secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        let (name, fresh) = (name.to_string(), fresh.to_string());
        in_tx!(self, |tx| tokens::secret(&tx, &name, &fresh).await)
    }

    async fn publish(&self, keys: Vec<String>) -> StoreResult<()> {
        notify::publish(&self.pool, &self.replica, keys).await
    }

    fn subscribe(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        Some(notify::subscribe(self.config.clone(), self.replica.clone()))
    }
}

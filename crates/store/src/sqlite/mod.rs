//! The embedded SQLite store: one file in WAL mode, a write path that commits in groups
//! (see [`writer`]), and a small pool of read connections on tokio's blocking pool.

mod agents;
mod items;
mod jobs;
mod lease;
mod logs;
mod metrics;
mod prune;
mod queues;
mod rows;
mod runs;
mod schema;
mod sweeps;
mod tokens;
mod writer;

pub use writer::DEFAULT_WAL_LIMIT;

use crate::{
    Ack, Expired, LeaseParams, LogAppend, LogChunk, LostAgents, NewItem, NewSweep, NewSweepRun,
    Store, StoreError, StoreResult,
};
use async_trait::async_trait;
use liftoff_types::api::{FailRequest, ItemFilter, RunFilter};
use liftoff_types::{
    Agent, AgentId, Heartbeat, HeartbeatReply, Item, ItemId, JobSpec, JobVersion, Lease, Millis,
    NewAgent, NewQueue, Queue, Run, RunId, RunUpdate, Scope, Sweep, SweepState, TokenInfo,
};
use rusqlite::{Connection, OpenFlags};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use writer::{ReadGate, Writer};

/// Read connections kept open between reads.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    writer: Arc<Writer>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Held by every read; the checkpointer empties the WAL with none in flight.
    gate: ReadGate,
    /// Lease calls per agent, for the round-robin start. Kept in memory: writing it to the
    /// file would cost a page per lease, and after a restart any start queue is fair.
    turns: Mutex<HashMap<AgentId, u64>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        SqliteStore::open_with_wal_limit(path, writer::DEFAULT_WAL_LIMIT)
    }

    /// [`open`](Self::open), with the WAL emptied whenever it passes `wal_limit` bytes.
    pub fn open_with_wal_limit(path: &Path, wal_limit: u64) -> StoreResult<SqliteStore> {
        let mut conn = open_connection(path, false)?;
        schema::migrate(&mut conn)?;
        let gate = ReadGate::default();
        let writer = Writer::start(conn, path, wal_limit, gate.clone())?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer,
            readers: Arc::new(Mutex::new(Vec::new())),
            gate,
            turns: Mutex::new(HashMap::new()),
        })
    }

    fn next_turn(&self, agent: AgentId) -> u64 {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        let turn = turns.entry(agent).or_insert(0);
        *turn += 1;
        *turn - 1
    }

    /// Copies the whole WAL back into the database file and truncates it (waiting for the
    /// writer and readers). The checkpointer thread does this in the background; call it after
    /// a bulk load, or before copying the file.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        let path = self.path.clone();
        let gate = self.gate.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_connection(&path, false)?;
            gate.alone(|| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` inside the next group commit.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        self.writer.write(f).await
    }

    /// Runs `f` on a read connection on tokio's blocking pool. Reads see every write that has
    /// been answered, since answers come after commit.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        let gate = self.gate.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().map(|mut pool| pool.pop()).ok().flatten();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&path, true)?,
            };
            let result = {
                let _reading = gate.enter();
                f(&conn)
            };
            if let Ok(mut pool) = readers.lock() {
                if pool.len() < MAX_IDLE_READERS {
                    pool.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

pub(crate) fn open_connection(path: &Path, read_only: bool) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL lets readers run beside the writer; NORMAL syncs at checkpoints only, which keeps
    // every commit safe from a process crash (not from a power cut) at a fraction of the cost.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32000;",
    )?;
    conn.set_prepared_statement_cache_capacity(256);
    // The query planner's stability guarantee: a plan never depends on bound values. Without
    // it, a statement whose `LIMIT ?` (or a `?` compared against a partial index) changes
    // value between calls is compiled again on every call (seen in profiles of the lease).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

#[async_trait]
impl Store for SqliteStore {
    async fn close(&self) -> StoreResult<()> {
        self.checkpoint().await
    }

    async fn create_queue(&self, queue: NewQueue, now: Millis) -> StoreResult<Queue> {
        self.write(move |c| queues::create(c, &queue, now)).await
    }

    async fn list_queues(&self) -> StoreResult<Vec<Queue>> {
        self.read(queues::list).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn get_queue(&self, name: &str, depth: bool) -> StoreResult<Queue> {
        let name = name.to_string();
        self.read(move |c| queues::get(c, &name, depth)).await
    }

    async fn delete_queue(&self, name: &str, force: bool, now: Millis) -> StoreResult<()> {
        let name = name.to_string();
        self.write(move |c| queues::delete(c, &name, force, now))
            .await
    }

    async fn enqueue(&self, item: NewItem, now: Millis) -> StoreResult<Item> {
        self.write(move |c| items::enqueue(c, &item, None, now))
            .await
    }

    async fn get_item(&self, id: ItemId) -> StoreResult<Item> {
        self.read(move |c| items::get(c, id)).await
    }

    async fn list_items(&self, filter: &ItemFilter) -> StoreResult<Vec<Item>> {
        let filter = filter.clone();
        self.read(move |c| items::list(c, &filter)).await
    }

    async fn item_file(&self, id: ItemId, name: &str) -> StoreResult<String> {
        let name = name.to_string();
        self.read(move |c| items::file(c, id, &name)).await
    }

    async fn cancel(&self, id: ItemId, now: Millis) -> StoreResult<Item> {
        self.write(move |c| lease::cancel(c, id, now)).await
    }

    async fn force_cancel(&self, id: ItemId, reason: &str, now: Millis) -> StoreResult<Item> {
        let reason = reason.to_string();
        self.write(move |c| lease::force_cancel(c, id, &reason, now))
            .await
    }

    async fn lease(&self, params: LeaseParams, now: Millis) -> StoreResult<Vec<Lease>> {
        let turn = self.next_turn(params.agent);
        self.write(move |c| lease::lease(c, &params, turn, now))
            .await
    }

    async fn ack(&self, id: ItemId, ack: Ack, now: Millis) -> StoreResult<Run> {
        self.write(move |c| {
            lease::ack(c, id, &ack, now)?;
            rows::load_run(c, &ack.run_id)
        })
        .await
    }

    async fn ack_quietly(&self, id: ItemId, ack: Ack, now: Millis) -> StoreResult<()> {
        self.write(move |c| lease::ack(c, id, &ack, now)).await
    }

    async fn fail(&self, id: ItemId, report: FailRequest, now: Millis) -> StoreResult<Item> {
        self.write(move |c| lease::fail(c, id, &report, now)).await
    }

    async fn warn(&self, id: ItemId, fence: i64, message: &str, now: Millis) -> StoreResult<()> {
        let message = message.to_string();
        self.write(move |c| lease::warn(c, id, fence, &message, now))
            .await
    }

    async fn release(&self, id: ItemId, fence: i64, now: Millis) -> StoreResult<()> {
        self.write(move |c| lease::release(c, id, fence, now)).await
    }

    async fn expire_leases(&self, now: Millis) -> StoreResult<Expired> {
        self.write(move |c| lease::expire(c, now)).await
    }

    async fn update_run(&self, id: &RunId, update: RunUpdate, now: Millis) -> StoreResult<Run> {
        let id = id.clone();
        self.write(move |c| {
            runs::update(c, &id, &update, now)?;
            rows::load_run(c, &id)
        })
        .await
    }

    async fn update_run_quietly(
        &self,
        id: &RunId,
        update: RunUpdate,
        now: Millis,
    ) -> StoreResult<()> {
        let id = id.clone();
        self.write(move |c| runs::update(c, &id, &update, now))
            .await
    }

    async fn get_run(&self, id: &RunId) -> StoreResult<Run> {
        let id = id.clone();
        self.read(move |c| runs::get(c, &id)).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let filter = filter.clone();
        self.read(move |c| runs::list(c, &filter)).await
    }

    async fn request_stop(
        &self,
        id: &RunId,
        reason: Option<String>,
        now: Millis,
    ) -> StoreResult<Run> {
        let id = id.clone();
        self.write(move |c| runs::request_stop(c, &id, reason.as_deref(), now))
            .await
    }

    async fn append_metrics(
        &self,
        id: &RunId,
        first_line: Option<u64>,
        records: Vec<Map<String, Value>>,
        now: Millis,
    ) -> StoreResult<u64> {
        let id = id.clone();
        self.write(move |c| metrics::append(c, &id, first_line, &records, now))
            .await
    }

    async fn read_metrics(&self, id: &RunId) -> StoreResult<Vec<Map<String, Value>>> {
        let id = id.clone();
        self.read(move |c| metrics::read(c, &id)).await
    }

    async fn put_job_version(
        &self,
        name: &str,
        key: &str,
        spec: JobSpec,
        now: Millis,
    ) -> StoreResult<(JobVersion, bool)> {
        let (name, key) = (name.to_string(), key.to_string());
        self.write(move |c| jobs::put(c, &name, &key, &spec, now))
            .await
    }

    async fn get_job_version(&self, name: &str, version: Option<u32>) -> StoreResult<JobVersion> {
        let name = name.to_string();
        self.read(move |c| jobs::get(c, &name, version)).await
    }

    async fn list_job_versions(&self, name: Option<&str>) -> StoreResult<Vec<JobVersion>> {
        let name = name.map(str::to_string);
        self.read(move |c| jobs::list(c, name.as_deref())).await
    }

    async fn create_sweep(
        &self,
        sweep: NewSweep,
        scheduler: NewItem,
        now: Millis,
    ) -> StoreResult<Sweep> {
        self.write(move |c| sweeps::create(c, &sweep, &scheduler, now))
            .await
    }

    async fn get_sweep(&self, id: &str) -> StoreResult<Sweep> {
        let id = id.to_string();
        self.read(move |c| sweeps::get(c, &id)).await
    }

    async fn list_sweeps(&self) -> StoreResult<Vec<Sweep>> {
        self.read(sweeps::list).await
    }

    async fn set_sweep_state(
        &self,
        id: &str,
        to: SweepState,
        message: Option<String>,
        now: Millis,
    ) -> StoreResult<(Sweep, Vec<Item>)> {
        let id = id.to_string();
        self.write(move |c| sweeps::set_state(c, &id, to, message.as_deref(), now))
            .await
    }

    async fn enqueue_sweep_run(&self, run: NewSweepRun, now: Millis) -> StoreResult<Item> {
        self.write(move |c| sweeps::enqueue_run(c, &run, now)).await
    }

    async fn append_log(
        &self,
        id: &RunId,
        at: LogAppend,
        data: Vec<u8>,
        now: Millis,
    ) -> StoreResult<u64> {
        let id = id.clone();
        self.write(move |c| logs::append(c, &id, &at, &data, now))
            .await
    }

    async fn read_log(&self, id: &RunId, offset: u64, max: usize) -> StoreResult<LogChunk> {
        let id = id.clone();
        self.read(move |c| logs::read(c, &id, offset, max)).await
    }

    async fn pending_front(&self, queue: &str, limit: u32) -> StoreResult<Vec<Item>> {
        let queue = queue.to_string();
        self.read(move |c| items::pending_front(c, &queue, limit))
            .await
    }

    async fn item_counts(&self) -> StoreResult<crate::ItemCounts> {
        self.read(queues::item_counts).await
    }

    fn commit_times(&self) -> Option<&crate::CommitTimes> {
        Some(&self.writer.commits)
    }

    async fn log_len(&self, id: &RunId) -> StoreResult<u64> {
        let id = id.clone();
        self.read(move |c| logs::len(c, &id)).await
    }

    async fn request_agent_stop(&self, id: AgentId, now: Millis) -> StoreResult<Agent> {
        self.write(move |c| agents::request_stop(c, id, now)).await
    }

    async fn lose_agents(
        &self,
        cutoff: Millis,
        now: Millis,
        hold_until: Millis,
    ) -> StoreResult<LostAgents> {
        self.write(move |c| agents::lose(c, cutoff, now, hold_until))
            .await
    }

    async fn prune(&self, cutoff: Millis, dry_run: bool) -> StoreResult<crate::Pruned> {
        self.write(move |c| prune::prune(c, cutoff, dry_run)).await
    }

    async fn register_agent(&self, agent: NewAgent, now: Millis) -> StoreResult<Agent> {
        self.write(move |c| agents::register(c, &agent, now)).await
    }

    async fn heartbeat(
        &self,
        id: AgentId,
        beat: Heartbeat,
        now: Millis,
    ) -> StoreResult<HeartbeatReply> {
        self.write(move |c| agents::heartbeat(c, id, &beat, now))
            .await
    }

    async fn touch_agent(&self, id: AgentId, now: Millis) -> StoreResult<()> {
        self.write(move |c| agents::touch(c, id, now)).await
    }

    async fn get_agent(&self, id: AgentId) -> StoreResult<Agent> {
        self.read(move |c| agents::get(c, id)).await
    }

    async fn list_agents(&self) -> StoreResult<Vec<Agent>> {
        self.read(agents::list).await
    }

    async fn create_token(
        &self,
        name: &str,
        scope: Scope,
        hash: &str,
        now: Millis,
    ) -> StoreResult<TokenInfo> {
        let (name, hash) = (name.to_string(), hash.to_string());
        self.write(move |c| tokens::create(c, &name, scope, &hash, now))
            .await
    }

    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenInfo>> {
        let hash = hash.to_string();
        self.read(move |c| tokens::by_hash(c, &hash)).await
    }

    async fn list_tokens(&self) -> StoreResult<Vec<TokenInfo>> {
        self.read(tokens::list).await
    }

    async fn delete_token(&self, id: i64) -> StoreResult<()> {
        self.write(move |c| tokens::delete(c, id)).await
    }

    async fn secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        let (name, fresh) = (name.to_string(), fresh.to_string());
        self.write(move |c| tokens::secret(c, &name, &fresh)).await
    }
}

//! The `Store` trait: everything the server keeps (queues, items and their leases, runs,
//! agents, tokens), its embedded SQLite implementation, and a PostgreSQL one for several
//! server replicas sharing a database.
//!
//! Only the server talks to a store. Every method that involves a deadline takes `now`, so
//! the lease protocol is tested without sleeping. A store enforces the item lifecycle itself
//! (fences, states, attempt limits): the HTTP layer only validates shapes.

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
pub mod postgres;
mod retries;
mod rules;
pub mod sqlite;

pub use error::{StoreError, StoreResult};
pub use liftoff_types::api::LogAppend;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The wake-up key that stands for every waiter (sent after a replica may have missed some).
pub const WAKE_EVERYONE: &str = "*";

use async_trait::async_trait;
use liftoff_types::api::{FailRequest, ItemFilter, RunFilter};
use liftoff_types::{
    Agent, AgentId, Heartbeat, HeartbeatReply, Item, ItemId, ItemKind, JobSpec, JobVersion,
    LaunchSpec, Lease, Millis, NewAgent, NewQueue, Priority, Queue, Run, RunId, RunState,
    RunUpdate, Scope, Sweep, SweepState, TokenInfo,
};
use serde_json::{Map, Value};

/// An item ready to be stored: the spec as given, and the resource args the server resolved
/// from the queue's template.
#[derive(Clone, Debug)]
pub struct NewItem {
    pub queue: String,
    pub spec: LaunchSpec,
    pub priority: Priority,
    pub resource_args: Value,
    pub kind: ItemKind,
}

/// A sweep ready to be stored (its scheduler item is enqueued with it).
#[derive(Clone, Debug)]
pub struct NewSweep {
    pub id: String,
    pub name: Option<String>,
    pub queue: String,
    pub config: Value,
    pub concurrency: u32,
}

/// A sweep's run to enqueue: its index in the sweep and the sweep's `run_cap`.
#[derive(Clone, Debug)]
pub struct NewSweepRun {
    pub sweep: String,
    pub index: u32,
    pub run_cap: Option<u64>,
    pub item: NewItem,
}

/// One lease call: which agent, which queues (round-robin), how many, for how long.
#[derive(Clone, Debug)]
pub struct LeaseParams {
    pub agent: AgentId,
    pub queues: Vec<String>,
    pub max: u32,
    pub lease_ms: u64,
    /// Take items of kind `run`.
    pub runs: bool,
    /// Take sweep schedulers.
    pub schedulers: bool,
}

/// An ack: the run id and backend handle the item's run is bound to.
#[derive(Clone, Debug)]
pub struct Ack {
    pub fence: i64,
    pub run_id: RunId,
    pub handle: Value,
    pub state: RunState,
}

/// What a pass of the lease reaper changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expired {
    /// Items put back to `pending`, with their queue (to wake long-polls on it).
    pub requeued: Vec<(ItemId, String)>,
    /// Items that reached their queue's attempt limit and failed with phase `agent`.
    pub failed: Vec<ItemId>,
}

/// A piece of a run's output read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogChunk {
    pub data: Vec<u8>,
    /// Where the next read starts.
    pub next_offset: u64,
    /// The run has ended: nothing will follow `next_offset` once it is reached.
    pub ended: bool,
}

/// Item counts for the metrics: pending items by queue and priority (0 critical .. 3 low),
/// ended items by queue, state and failure phase (`None` unless failed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ItemCounts {
    pub pending: Vec<(String, i64, u64)>,
    pub ended: Vec<(String, String, Option<String>, u64)>,
    /// Retries of the stored items by queue and cause (`lost`, `exit-code`, ...).
    pub requeues: Vec<(String, String, u64)>,
}

/// Where a store tells how long its transactions take, from begin to commit (SQLite: one
/// group commit), for the server's metrics. Set once.
#[derive(Default)]
pub struct CommitTimes(std::sync::OnceLock<Box<dyn Fn(std::time::Duration) + Send + Sync>>);

impl CommitTimes {
    pub fn observe(&self, took: std::time::Duration) {
        if let Some(report) = self.0.get() {
            report(took);
        }
    }

    /// Sends every later transaction's time to `report` (a second call is ignored).
    pub fn report_to(&self, report: Box<dyn Fn(std::time::Duration) + Send + Sync>) {
        let _ = self.0.set(report);
    }
}

/// What a prune removed, or with `dry_run` would remove.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pruned {
    pub items: u64,
    pub runs: u64,
    pub agents: u64,
    /// Ended sweeps, gone with all their items.
    pub sweeps: u64,
    /// Code archives no job version refers to (counted by the server, not the store).
    pub archives: u64,
}

/// What a pass of the agent-liveness check changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LostAgents {
    pub agents: Vec<AgentId>,
    /// Queues that got items back (to wake long-polls on them).
    pub requeued: Vec<String>,
    /// Runs declared lost.
    pub runs: Vec<RunId>,
}

/// The state the server keeps. Implementations: [`SqliteStore`] (embedded, the default) and
/// [`PostgresStore`] (shared by several servers). Both pass [`conformance`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Queues.
    async fn create_queue(&self, queue: NewQueue, now: Millis) -> StoreResult<Queue>;
    async fn list_queues(&self) -> StoreResult<Vec<Queue>>;
    /// One queue; with `depth`, its item counts by state.
    async fn get_queue(&self, name: &str, depth: bool) -> StoreResult<Queue>;
    /// Deletes a queue and its items. Refused while it has live (non-terminal) items unless
    /// `force`, which cancels them first.
    async fn delete_queue(&self, name: &str, force: bool, now: Millis) -> StoreResult<()>;

    // Items.
    async fn enqueue(&self, item: NewItem, now: Millis) -> StoreResult<Item>;
    /// One item, with its warnings, failure and (when pending) position.
    async fn get_item(&self, id: ItemId) -> StoreResult<Item>;
    /// Items by filter, oldest first; pending ones carry their position.
    async fn list_items(&self, filter: &ItemFilter) -> StoreResult<Vec<Item>>;
    /// The content of a file attached to an item's failure.
    async fn item_file(&self, id: ItemId, name: &str) -> StoreResult<String>;
    /// A user's cancel: pending and leased items end `cancelled` at once; a claimed item is
    /// marked so its agent stops the run. Terminal items are a conflict.
    async fn cancel(&self, id: ItemId, now: Millis) -> StoreResult<Item>;
    /// `cancel --force`: a claimed item ends `cancelled` at once and its run `lost` with
    /// `reason` (for an agent that is gone for good); other states go as in `cancel`.
    async fn force_cancel(&self, id: ItemId, reason: &str, now: Millis) -> StoreResult<Item>;

    // The lease protocol.
    /// Leases up to `max` pending items, round-robin across `queues` (starting one queue
    /// further on each call of the same agent), priority then FIFO inside each queue.
    async fn lease(&self, params: LeaseParams, now: Millis) -> StoreResult<Vec<Lease>>;
    /// Binds a run to a leased item: the item becomes `claimed` and the run is created.
    async fn ack(&self, id: ItemId, ack: Ack, now: Millis) -> StoreResult<Run>;
    /// [`Store::ack`] for a caller that has the run already (an agent's batch): an engine
    /// may skip reading it back.
    async fn ack_quietly(&self, id: ItemId, ack: Ack, now: Millis) -> StoreResult<()> {
        self.ack(id, ack, now).await.map(|_| ())
    }
    /// Fails a leased or claimed item (and its run, if any).
    async fn fail(&self, id: ItemId, report: FailRequest, now: Millis) -> StoreResult<Item>;
    async fn warn(&self, id: ItemId, fence: i64, message: &str, now: Millis) -> StoreResult<()>;
    /// Gives a leased, unacked item back without counting an attempt.
    async fn release(&self, id: ItemId, fence: i64, now: Millis) -> StoreResult<()>;
    /// Returns expired leases to `pending` (attempts + 1), failing those past the limit.
    async fn expire_leases(&self, now: Millis) -> StoreResult<Expired>;

    // Runs.
    /// An agent's report on a run; a terminal state ends the item too.
    async fn update_run(&self, id: &RunId, update: RunUpdate, now: Millis) -> StoreResult<Run>;
    /// [`Store::update_run`] for a caller that needs only to know it was stored (an agent's
    /// batch): an engine may skip reading the run back.
    async fn update_run_quietly(
        &self,
        id: &RunId,
        update: RunUpdate,
        now: Millis,
    ) -> StoreResult<()> {
        self.update_run(id, update, now).await.map(|_| ())
    }
    async fn get_run(&self, id: &RunId) -> StoreResult<Run>;
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>>;
    /// A stop: marks the run (and its item) so that the agent stops it. A `reason` becomes
    /// the message of the run once it has stopped.
    async fn request_stop(
        &self,
        id: &RunId,
        reason: Option<String>,
        now: Millis,
    ) -> StoreResult<Run>;

    /// Appends metric records to a live run. With `first_line` (the agent shipping the run's
    /// metrics file) records already kept for those lines are skipped. Returns the count kept.
    async fn append_metrics(
        &self,
        id: &RunId,
        first_line: Option<u64>,
        records: Vec<Map<String, Value>>,
        now: Millis,
    ) -> StoreResult<u64>;
    /// Every metric record of a run, in arrival order.
    async fn read_metrics(&self, id: &RunId) -> StoreResult<Vec<Map<String, Value>>>;

    // Jobs.
    /// Stores a job version under `name`: the next version number, or, when a version with
    /// the same `key` (a hash of its spec) exists, that version (`false`: nothing new).
    async fn put_job_version(
        &self,
        name: &str,
        key: &str,
        spec: JobSpec,
        now: Millis,
    ) -> StoreResult<(JobVersion, bool)>;
    /// One version of a job; `None`: its latest.
    async fn get_job_version(&self, name: &str, version: Option<u32>) -> StoreResult<JobVersion>;
    /// Every version of one job (or of every job), by name then version.
    async fn list_job_versions(&self, name: Option<&str>) -> StoreResult<Vec<JobVersion>>;

    // Sweeps.
    /// Stores a sweep (`pending`) and enqueues its scheduler item, in one write.
    async fn create_sweep(
        &self,
        sweep: NewSweep,
        scheduler: NewItem,
        now: Millis,
    ) -> StoreResult<Sweep>;
    async fn get_sweep(&self, id: &str) -> StoreResult<Sweep>;
    async fn list_sweeps(&self) -> StoreResult<Vec<Sweep>>;
    /// Moves a sweep (see [`SweepState::may_become`]). Cancelling also cancels every live item
    /// of the sweep, its scheduler's included; the items touched are returned (to wake their
    /// agents).
    async fn set_sweep_state(
        &self,
        id: &str,
        to: SweepState,
        message: Option<String>,
        now: Millis,
    ) -> StoreResult<(Sweep, Vec<Item>)>;
    /// Enqueues a sweep's run while the sweep is `running`, its index under `run_cap`. The
    /// same index again returns the item already there, so no run is ever enqueued twice.
    async fn enqueue_sweep_run(&self, run: NewSweepRun, now: Millis) -> StoreResult<Item>;

    /// Appends output at `offset` (a byte offset in the run's output). Bytes the store already
    /// has are skipped, so a retried append is harmless; a gap is a conflict. Returns the
    /// stored length.
    async fn append_log(
        &self,
        id: &RunId,
        at: LogAppend,
        data: Vec<u8>,
        now: Millis,
    ) -> StoreResult<u64>;
    /// Up to `max` bytes of output from `offset`.
    async fn read_log(&self, id: &RunId, offset: u64, max: usize) -> StoreResult<LogChunk>;
    /// The first `limit` pending items of a queue in the order they will be leased, each
    /// with its position (what a queue's page lists, without reading the whole queue).
    async fn pending_front(&self, queue: &str, limit: u32) -> StoreResult<Vec<Item>>;
    /// Pending and ended items counted for `/metrics`.
    async fn item_counts(&self) -> StoreResult<ItemCounts>;
    /// Where this store reports its transactions' times.
    fn commit_times(&self) -> Option<&CommitTimes> {
        None
    }
    /// How many bytes of output the run has (where a follower of its tail starts).
    async fn log_len(&self, id: &RunId) -> StoreResult<u64>;

    /// Called once the server has stopped: leaves the store tidy (SQLite empties its WAL
    /// into the database file, so a stopped server leaves one file behind).
    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }

    // Agents.
    async fn register_agent(&self, agent: NewAgent, now: Millis) -> StoreResult<Agent>;
    async fn heartbeat(
        &self,
        id: AgentId,
        beat: Heartbeat,
        now: Millis,
    ) -> StoreResult<HeartbeatReply>;
    /// Marks an agent as heard from at `now` without changing what it last reported: the
    /// server holds a heartbeat open as a long-poll and the agent is alive all along. Never
    /// moves the time back, and leaves a lost or stopped agent as it is.
    async fn touch_agent(&self, id: AgentId, now: Millis) -> StoreResult<()>;
    async fn get_agent(&self, id: AgentId) -> StoreResult<Agent>;
    async fn list_agents(&self) -> StoreResult<Vec<Agent>>;
    /// Asks an agent to stop (it hears on its next heartbeat).
    async fn request_agent_stop(&self, id: AgentId, now: Millis) -> StoreResult<Agent>;
    /// Declares lost every agent not heard from since `cutoff`: its leased items go back
    /// (counting an attempt), its runs become `lost` (their items fail with phase `agent`,
    /// or go back when their queue has `requeue_lost` or the run never started, and are
    /// not leased again before `hold_until`).
    async fn lose_agents(
        &self,
        cutoff: Millis,
        now: Millis,
        hold_until: Millis,
    ) -> StoreResult<LostAgents>;
    /// Removes ended items (not a sweep's) last changed before `cutoff`, with their runs,
    /// logs, metrics, warnings and files, and agents stopped or lost before it that hold
    /// nothing; with `dry_run`, only counts them.
    async fn prune(&self, cutoff: Millis, dry_run: bool) -> StoreResult<Pruned>;

    // Tokens: only hashes are stored.
    async fn create_token(
        &self,
        name: &str,
        scope: Scope,
        hash: &str,
        now: Millis,
    ) -> StoreResult<TokenInfo>;
    async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<TokenInfo>>;
    async fn list_tokens(&self) -> StoreResult<Vec<TokenInfo>>;
    async fn delete_token(&self, id: i64) -> StoreResult<()>;
    /// The secret named `name` that every server of this store shares (the key run tokens
    /// are signed with): `fresh` becomes it if none is stored yet, else the stored one wins.
    async fn secret(&self, name: &str, fresh: &str) -> StoreResult<String>;

    /// Whether the database answers now (one trivial read), for a readiness probe.
    async fn ping(&self) -> StoreResult<()>;

    // Wake-ups across servers sharing this store. A store used by one process only needs
    // neither: the defaults do nothing.
    /// Tells the other servers to wake their long-polls waiting on `keys`.
    async fn publish(&self, _keys: Vec<String>) -> StoreResult<()> {
        Ok(())
    }
    /// Keys other servers published, from now on ([`WAKE_EVERYONE`] wakes every waiter).
    fn subscribe(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        None
    }
}

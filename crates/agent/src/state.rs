//! What an agent holds and knows, shared by its main loop (`agent.rs`) and each item's task
//! (`item/`): its client and outbox, config, runners, journal, caches, and the slots of the
//! items in flight, with the small steps every part takes on them. Item tasks depend on this,
//! never on the main loop.

use crate::config::AgentConfig;
use crate::journal::Journal;
use crate::slots::{Phase, Slots, StopWhy};
use crate::status::Snapshot;
use liftoff_client::Client;
use liftoff_runner::{Runner, Runners};
use liftoff_types::{AgentId, AgentStatus, ItemId, ResourceType};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};

pub struct Agent {
    pub(crate) client: Client,
    /// Acks and run reports, batched.
    pub(crate) outbox: crate::outbox::Outbox,
    pub(crate) config: AgentConfig,
    /// One runner per resource type the agent's queues run.
    pub(crate) runners: Runners,
    /// Each queue's resource type, learned at start.
    pub(crate) resources: HashMap<String, ResourceType>,
    pub(crate) journal: Journal,
    /// The agent's environment as runs inherit it (secrets taken out), shared by them all.
    pub(crate) base_env: Arc<BTreeMap<String, String>>,
    /// The server address as runs should use it.
    pub(crate) api_url: String,
    /// Jobs' sources and Python environments.
    pub(crate) cache: crate::source::Cache,
    /// Run directories to reuse.
    pub(crate) spares: crate::spares::Spares,
    /// Set once the directories made ahead at start are made.
    pub(crate) made_ahead: std::sync::atomic::AtomicBool,
    pub(crate) id: AgentId,
    pub(crate) name: String,
    /// Every item held, by phase, and the ready queue.
    pub(crate) slots: Mutex<Slots>,
    /// Poked when a slot frees or the in-flight set changes.
    pub(crate) changed: Notify,
    pub(crate) status: Mutex<AgentStatus>,
    pub(crate) stopping: watch::Sender<bool>,
    /// The server's store, as `/limits` names it (none from an earlier server): with an
    /// item's id, what names an item across the servers that share a backend.
    pub(crate) store_id: Option<String>,
    /// The agent's lease on its runs (see [`crate::lease`]).
    pub(crate) lease: crate::lease::Lease,
    /// Free space in the state directory (see [`crate::disk`]).
    pub(crate) disk: crate::disk::DiskGuard,
}

impl Agent {
    /// The runner of a queue's items.
    pub(crate) fn runner_for(&self, queue: &str) -> Option<Arc<dyn Runner>> {
        let resource = self.resources.get(queue)?;
        self.runners.get(*resource).cloned()
    }

    /// The queues to lease from now: those whose runner has room under its own limit.
    pub(crate) fn queues_with_room(&self) -> Vec<String> {
        let slots = lock(&self.slots);
        self.config
            .queues
            .iter()
            .filter(|q| {
                let Some(resource) = self.resources.get(*q) else {
                    return true;
                };
                let Some(limit) = self.runners.limit(*resource) else {
                    return true;
                };
                let held = self
                    .resources
                    .iter()
                    .filter(|(_, r)| *r == resource)
                    .map(|(queue, _)| slots.held_from(queue))
                    .sum::<usize>();
                held < limit as usize
            })
            .cloned()
            .collect()
    }

    /// The server-assigned name (the seed's `name()`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> AgentId {
        self.id
    }

    /// Runs in flight, schedulers not counted (the seed's `num_running_jobs`).
    pub fn num_running_jobs(&self) -> usize {
        lock(&self.slots).running()
    }

    /// Items held in any phase (preparing, ready, running, reporting).
    pub(crate) fn held(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Sweep schedulers in flight (the seed's `num_running_schedulers`).
    pub fn num_running_schedulers(&self) -> usize {
        lock(&self.slots).schedulers()
    }

    /// Room for more schedulers under `max_schedulers` (-1: unlimited).
    pub(crate) fn free_scheduler_slots(&self) -> u32 {
        let max = self.config.max_schedulers;
        if max < 0 {
            return u32::MAX;
        }
        (max - self.num_running_schedulers() as i64).max(0) as u32
    }

    /// The items in flight (the seed's `thread_ids`).
    pub fn in_flight(&self) -> Vec<ItemId> {
        lock(&self.slots).in_flight()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            name: self.name.clone(),
            status: *lock(&self.status),
            queues: self.config.queues.clone(),
            jobs: self.num_running_jobs(),
            max_jobs: self.config.max_jobs,
            schedulers: self.num_running_schedulers(),
            max_schedulers: self.config.max_schedulers,
            in_flight: self.in_flight(),
        }
    }

    pub(crate) fn free_slots(&self) -> u32 {
        lock(&self.slots).wanted()
    }

    pub(crate) fn set_status(&self, status: AgentStatus) {
        *lock(&self.status) = status;
    }

    /// Whether the run directories a starting agent makes ahead, while it has nothing else to
    /// do, are made (the agent bench waits for them, as an agent up for a moment has them).
    pub fn made_ahead(&self) -> bool {
        self.made_ahead.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Moves an item to another phase.
    pub(crate) fn mark(&self, item: ItemId, phase: Phase) {
        lock(&self.slots).mark(item, phase);
        self.changed.notify_waiters();
    }

    /// Re-adopted runs occupy a slot like any other.
    pub(crate) fn adopt_slot(
        self: &Arc<Self>,
        item: ItemId,
        queue: &str,
    ) -> watch::Receiver<StopWhy> {
        lock(&self.slots).add(item, Phase::Running, queue)
    }

    /// A run's process ended after `took`: its slot is free (the runner starts the next run
    /// waiting in its line) while its end is reported.
    pub(crate) fn process_ended(&self, item: ItemId, took: Duration) {
        {
            let mut slots = lock(&self.slots);
            slots.record_duration(took);
            slots.mark(item, Phase::Reporting);
        }
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    /// Asks the run of an item to stop (its task does the stopping, or withdraws a run that
    /// is still waiting to start).
    pub(crate) fn stop_item(&self, item: ItemId, why: StopWhy) {
        lock(&self.slots).stop(item, why);
    }

    /// Takes a finished task out (the seed's `finish_thread_id`).
    pub(crate) fn finish_item(&self, item: ItemId) {
        lock(&self.slots).remove(item);
        self.changed.notify_waiters();
        self.changed.notify_one();
    }

    pub(crate) fn reporting(&self) -> usize {
        lock(&self.slots).reporting()
    }

    /// Whether the agent is stopping (tasks stop starting new work).
    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

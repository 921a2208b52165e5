//! What the agent holds, item by item: being prepared (acked, directory being made), ready
//! (handed to the runner, waiting in its line for a free slot), running (a live process:
//! what counts against `max_jobs`), or reporting (the process ended; its end is on its way
//! to the server).
//!
//! Why `ready` exists: when runs are short, the round trips to lease and ack the next item
//! would leave a slot idle between two runs. Then the agent takes a few items ahead and hands
//! them to the runner, which starts the next one the moment a run ends. When runs are long it
//! takes none ahead: an item held here would wait while another agent sits idle.

use liftoff_types::ItemId;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How a run's task is told to stop. Kept in the journal once decided, so a run stopped
/// before a restart is reported as stopped by the agent that takes it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopWhy {
    /// Not asked to stop.
    No,
    /// A user asked (or the item is no longer ours): stop, with the grace period.
    Asked,
    /// The agent is stopping and its grace period ran out.
    AgentStopping,
    /// Stop now (a second signal).
    Now,
    /// The agent's lease lapsed: the server no longer counts it alive (see
    /// [`crate::lease`]).
    Lapsed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Preparing,
    Ready,
    Running,
    Reporting,
    /// A sweep's scheduler: counted against `max_schedulers`, never against `max_jobs`.
    Scheduling,
}

/// Runs shorter than this (median of the last few) make the agent take items ahead.
const SHORT_RUN: Duration = Duration::from_secs(1);
const RECENT: usize = 8;
/// Most items taken ahead.
const MAX_AHEAD: i64 = 64;
/// How much work (per slot) the items taken ahead should cover.
const AHEAD_FOR: Duration = Duration::from_millis(20);

pub struct Slots {
    /// Each item's phase, its stop, and its queue (for runners' own limits).
    items: HashMap<ItemId, (Phase, watch::Sender<StopWhy>, String)>,
    max_jobs: i64,
    recent: VecDeque<Duration>,
    /// How many runs held here have an end still to come (preparing, ready or running),
    /// shared with the outbox: a report waits for company only while one may come.
    ends_to_come: Arc<AtomicUsize>,
}

/// Whether an item in `phase` is a run whose end is still to come.
fn end_to_come(phase: Phase) -> bool {
    matches!(phase, Phase::Preparing | Phase::Ready | Phase::Running)
}

impl Slots {
    pub fn new(max_jobs: i64) -> Slots {
        Slots {
            items: HashMap::new(),
            max_jobs,
            recent: VecDeque::new(),
            ends_to_come: Arc::default(),
        }
    }

    /// The count of runs whose end is still to come, kept up to date by this.
    pub fn ends_to_come(&self) -> Arc<AtomicUsize> {
        self.ends_to_come.clone()
    }

    /// Keeps [`Slots::ends_to_come`] right across an item's change from `from` to `to`.
    fn counted(&self, from: Option<Phase>, to: Option<Phase>) {
        match (from.is_some_and(end_to_come), to.is_some_and(end_to_come)) {
            (false, true) => {
                self.ends_to_come.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.ends_to_come.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn count(&self, phase: Phase) -> usize {
        self.items.values().filter(|(p, _, _)| *p == phase).count()
    }

    pub fn running(&self) -> usize {
        self.count(Phase::Running)
    }

    /// How many more items to lease now: free slots, plus room ahead when runs are short.
    pub fn wanted(&self) -> u32 {
        let cap = liftoff_types::api::MAX_LEASE_BATCH as i64;
        if self.max_jobs < 0 {
            return cap as u32;
        }
        let held = (self.items.len() - self.count(Phase::Reporting) - self.schedulers()) as i64;
        let ahead = self.ahead();
        // While at least half the items taken ahead still wait, the slots have work: lease
        // again when half are used, in one batch, not one item each time a run ends (a
        // lease per run was most of a short run's cost).
        let waiting = held - self.running() as i64;
        if ahead > 0 && waiting > 0 && waiting * 2 >= ahead {
            return 0;
        }
        (self.max_jobs + ahead - held).clamp(0, cap) as u32
    }

    /// Items to take ahead of free slots: while runs are short, enough to keep every slot
    /// busy for about [`AHEAD_FOR`] (the time it takes to lease, ack and prepare more).
    fn ahead(&self) -> i64 {
        if self.recent.len() < RECENT / 2 {
            return 0;
        }
        let mut sorted: Vec<Duration> = self.recent.iter().copied().collect();
        sorted.sort();
        let median = sorted[sorted.len() / 2].max(Duration::from_micros(100));
        if median >= SHORT_RUN {
            return 0;
        }
        let per_slot = (AHEAD_FOR.as_secs_f64() / median.as_secs_f64()).ceil() as i64;
        // One per slot at least, but never over the cap (an agent with more slots than
        // that takes the cap).
        (self.max_jobs * per_slot).clamp(self.max_jobs.min(MAX_AHEAD), MAX_AHEAD)
    }

    /// The most run items this agent holds at once, its directories in use: every slot,
    /// every item taken ahead, and a few ends on their way to the server.
    pub fn most_held(max_jobs: i64) -> usize {
        let slots = usize::try_from(max_jobs).unwrap_or(0);
        slots + MAX_AHEAD as usize + slots.min(16)
    }

    pub fn schedulers(&self) -> usize {
        self.count(Phase::Scheduling)
    }

    pub fn record_duration(&mut self, took: Duration) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
    }

    /// A new item in `phase`; returns how to tell it to stop.
    pub fn add(&mut self, item: ItemId, phase: Phase, queue: &str) -> watch::Receiver<StopWhy> {
        let (stop, rx) = watch::channel(StopWhy::No);
        let before = self
            .items
            .insert(item, (phase, stop, queue.to_string()))
            .map(|(p, _, _)| p);
        self.counted(before, Some(phase));
        rx
    }

    pub fn mark(&mut self, item: ItemId, phase: Phase) {
        if let Some(entry) = self.items.get_mut(&item) {
            let before = std::mem::replace(&mut entry.0, phase);
            self.counted(Some(before), Some(phase));
        }
    }

    /// Tells one item to stop.
    pub fn stop(&self, item: ItemId, why: StopWhy) {
        if let Some((_, stop, _)) = self.items.get(&item) {
            let _ = stop.send(why);
        }
    }

    /// Tells every item in `phase` (or in any phase) to stop.
    pub fn stop_all(&self, phase: Option<Phase>, why: StopWhy) {
        for (p, stop, _) in self.items.values() {
            if phase.is_none_or(|want| want == *p) {
                let _ = stop.send(why);
            }
        }
    }

    pub fn remove(&mut self, item: ItemId) {
        let before = self.items.remove(&item).map(|(p, _, _)| p);
        self.counted(before, None);
    }

    /// Runs from `queue` whose end is still to come.
    pub fn held_from(&self, queue: &str) -> usize {
        self.items
            .values()
            .filter(|(p, _, q)| end_to_come(*p) && q == queue)
            .count()
    }

    pub fn in_flight(&self) -> Vec<ItemId> {
        let mut ids: Vec<ItemId> = self.items.keys().copied().collect();
        ids.sort();
        ids
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn reporting(&self) -> usize {
        self.count(Phase::Reporting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_items_count_against_max_jobs() {
        let mut s = Slots::new(2);
        assert_eq!(s.wanted(), 2);
        let _a = s.add(ItemId(1), Phase::Preparing, "q");
        let _b = s.add(ItemId(2), Phase::Preparing, "q");
        assert_eq!(s.wanted(), 0, "held items count for leasing");
        s.mark(ItemId(1), Phase::Running);
        s.mark(ItemId(2), Phase::Ready);
        assert_eq!(s.running(), 1);
        s.mark(ItemId(1), Phase::Reporting);
        assert_eq!((s.running(), s.wanted(), s.reporting()), (0, 1, 1));
        s.remove(ItemId(1));
        assert_eq!(s.in_flight(), vec![ItemId(2)]);
        let ends = s.ends_to_come();
        assert_eq!(ends.load(Ordering::Relaxed), 1, "item 2, ready");
        let _c = s.add(ItemId(3), Phase::Scheduling, "q");
        assert_eq!(
            (s.schedulers(), s.wanted()),
            (1, 1),
            "schedulers count apart"
        );
        assert_eq!(
            ends.load(Ordering::Relaxed),
            1,
            "a scheduler reports no run's end"
        );
        s.mark(ItemId(2), Phase::Running);
        s.mark(ItemId(2), Phase::Reporting);
        assert_eq!(ends.load(Ordering::Relaxed), 0, "its end is on its way");
        let _d = s.add(ItemId(4), Phase::Preparing, "q");
        s.remove(ItemId(4));
        assert_eq!(ends.load(Ordering::Relaxed), 0, "gone without a report");
    }

    #[test]
    fn items_are_taken_ahead_only_while_runs_are_short() {
        let mut s = Slots::new(2);
        for _ in 0..8 {
            s.record_duration(Duration::from_millis(400));
        }
        assert_eq!(s.wanted(), 4, "a slot's worth ahead at least");
        for _ in 0..8 {
            s.record_duration(Duration::from_millis(1));
        }
        assert_eq!(s.wanted(), 2 + 40, "20 ms of work per slot");
        for _ in 0..8 {
            s.record_duration(Duration::from_secs(60));
        }
        assert_eq!(s.wanted(), 2);
        // More slots than the cap on items ahead: the cap (this panicked before).
        let mut wide = Slots::new(100);
        for _ in 0..8 {
            wide.record_duration(Duration::from_millis(1));
        }
        assert_eq!(wide.wanted(), 100 + MAX_AHEAD as u32);
        assert!(Slots::most_held(100) >= 100 + MAX_AHEAD as usize);
    }

    #[test]
    fn items_ahead_are_topped_up_in_batches() {
        let mut s = Slots::new(2);
        for _ in 0..8 {
            s.record_duration(Duration::from_millis(1));
        }
        let mut rx = Vec::new();
        for id in 0..2 {
            rx.push(s.add(ItemId(id), Phase::Running, "q"));
        }
        for id in 2..22 {
            rx.push(s.add(ItemId(id), Phase::Ready, "q"));
        }
        assert_eq!(s.wanted(), 0, "half of the 40 ahead still wait");
        s.remove(ItemId(21));
        assert_eq!(s.wanted(), 21, "below half: topped up in one lease");
        // One item ahead: nothing waiting means lease (half of one is not zero).
        let mut one = Slots::new(1);
        for _ in 0..8 {
            one.record_duration(Duration::from_millis(40));
        }
        assert_eq!(one.wanted(), 2);
        let _running = one.add(ItemId(1), Phase::Running, "q");
        assert_eq!(one.wanted(), 1);
        let _ready = one.add(ItemId(2), Phase::Ready, "q");
        assert_eq!(one.wanted(), 0);
    }

    #[test]
    fn stops_reach_the_phase_asked() {
        let mut s = Slots::new(2);
        let mut ready = s.add(ItemId(1), Phase::Ready, "q");
        let mut running = s.add(ItemId(2), Phase::Running, "q");
        s.stop_all(Some(Phase::Ready), StopWhy::AgentStopping);
        assert_eq!(*ready.borrow_and_update(), StopWhy::AgentStopping);
        assert_eq!(*running.borrow_and_update(), StopWhy::No);
        s.stop(ItemId(2), StopWhy::Asked);
        assert_eq!(*running.borrow_and_update(), StopWhy::Asked);
    }
}
